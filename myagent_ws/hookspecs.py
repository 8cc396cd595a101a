"""Hook specifications: what a plugin can add to myagent-ws. One docstring per hook,
written for plugin authors. Implement hooks with ``@myagent_ws.hookimpl``; a hook
implementation may accept any subset of the named arguments."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("myagent_ws")
hookimpl = HookimplMarker("myagent_ws")


@hookspec
def register_agents(register):
    """Contribute agents at start-up: call ``register(name, factory, description="",
    default=False)`` once per agent, where ``factory()`` returns a new agent instance (each
    session gets its own). Called once, after the plugin is loaded."""


@hookspec
def prepare_app(app, settings):
    """Extend the aiohttp application before it starts: add routes (under ``/-/<plugin>/``
    so plugins cannot clash), middlewares, or ``cleanup_ctx`` entries for background tasks.
    Called once per application, after the server's own routes are added."""


@hookspec
def observe_event(session_id, event):
    """See every outbound session event (``agent.*``) after it got its ``seq`` and was
    sent: for logging, metrics or persistence. ``event`` is read-only. May be ``async``;
    a failing observer is logged and never breaks a turn. Only called when some plugin
    implements it, so an unused hook costs nothing."""


@hookspec  # asked one by one, async ones awaited, by auth.Auth (not pm.hook.authenticate)
def authenticate(request):
    """Name who is connecting, for schemes the server does not know (JWT, cookies, an
    API gateway's header): return the principal, a non-empty string such as a user id,
    or None when the request carries nothing this plugin recognises (the next plugin is
    asked; with none left, the request gets HTTP 401). ``request`` is the
    ``aiohttp.web.Request`` of the WebSocket upgrade or of ``POST /auth/ticket``. May be
    ``async``. Implementing this hook turns authentication on; tokens given with
    ``--auth-token`` are checked before it. Sessions belong to the principal that
    created them."""
