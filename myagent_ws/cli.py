"""The `myagent-ws` command: builds settings and the registry, then serves. No server logic."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import functools
import gc
import inspect
import itertools
import json
import logging
import re
import sys
import traceback
import typing
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .registry import AgentRegistry, StartupError
from .settings import Settings

ENV_PREFIX = "MYAGENT_WS_"
# Older names some settings are also read from, after their MYAGENT_WS_ variable.
ENV_ALIASES = {
    "model": ["MYAGENT_MODEL"],
    "llm_base_url": ["OPENAI_BASE_URL"],
    "llm_api_key": ["OPENAI_API_KEY"],
}


def _fail(exc: Exception, debug: bool) -> None:
    """One clear line (a traceback only with --debug), exit status 2."""
    if debug:
        traceback.print_exception(exc)
    click.echo(f"Error: {exc}", err=True)
    sys.exit(2)


def _load(
    files: tuple[str, ...],
    plugins: tuple[str, ...],
    all_plugins: bool,
    default: str | None,
    say: Callable[[str], Any],
) -> tuple[AgentRegistry, Any]:
    from .plugins import AgentSources, build_registry, make_plugin_manager

    pm = make_plugin_manager()
    sources = AgentSources.with_env(files, plugins, all_plugins, default)
    return build_registry(pm, sources, say), pm


def field_help(cls: type) -> dict[str, str]:
    """Each field's help text: the comment lines directly above it in `cls`'s source."""
    lines, _ = inspect.getsourcelines(cls)
    helps = {}
    for node in ast.parse("".join(lines)).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above = lines[: node.lineno - 1][::-1]
            comment = itertools.takewhile(lambda line: line.lstrip().startswith("#"), above)
            text = [line.strip().removeprefix("#").strip() for line in comment]
            helps[node.target.id] = " ".join(reversed(text))
    return helps


def flag_name(field: str, repeatable: bool = False) -> str:
    """The option of a Settings field: --max-sessions; a repeatable one is singular."""
    return "--" + (field.removesuffix("s") if repeatable else field).replace("_", "-")


class CommaSeparated(click.ParamType):
    """A repeatable option's value; its environment variable holds several, comma-separated."""

    name = "text"
    envvar_list_splitter = ","

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        return str(value).strip()


def setting_option(field: dataclasses.Field[Any], kind: Any, help_text: str) -> Any:
    """`--field-name` / MYAGENT_WS_FIELD_NAME for one Settings field. It defaults to None:
    "not given", so the dataclass default applies and is written down only there. A tuple
    field (plural name) is a repeatable singular flag: `allowed_origins` is
    `--allowed-origin URL`, given once per value, or MYAGENT_WS_ALLOWED_ORIGINS=a,b."""
    envvar = [ENV_PREFIX + field.name.upper(), *ENV_ALIASES.get(field.name, [])]
    if typing.get_origin(kind) is tuple:
        if field.default:
            help_text += f"  [default: {', '.join(field.default)}]"
        return click.option(
            flag_name(field.name, repeatable=True),
            field.name,
            type=CommaSeparated(),
            multiple=True,
            envvar=envvar,
            show_envvar=True,
            help=help_text,
        )
    if typing.get_origin(kind) is typing.Literal:
        kind = click.Choice(typing.get_args(kind))
    else:
        kind = next(t for t in typing.get_args(kind) or [kind] if t is not type(None))
    flag = flag_name(field.name)
    if field.default not in (None, dataclasses.MISSING):
        help_text += f"  [default: {field.default}]"
    return click.option(
        f"{flag}/--no-{flag[2:]}" if kind is bool else flag,
        field.name,
        type=None if kind is bool else kind,
        default=None,
        envvar=envvar,
        show_envvar=True,
        help=help_text,
    )


def _given(value: Any) -> Any:
    """A flag's value, or None when it was not given (a repeatable flag gives ())."""
    if isinstance(value, tuple):
        value = tuple(item for item in value if item)
        return value or None
    return value


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per Settings field (flag, then environment, then the dataclass default);
    `command` gets them as one `settings` argument. A value Settings rejects exits 2."""
    fields = dataclasses.fields(Settings)
    names = [field.name for field in fields]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        given = {name: value for name in names if (value := _given(kwargs.pop(name))) is not None}
        try:
            settings = Settings(**given)
        except ValueError as exc:
            ctx = click.get_current_context()
            named = re.search(rf"\b({'|'.join(names)})\b", str(exc))
            param = next((p for p in ctx.command.params if named and p.name == named[1]), None)
            raise click.BadParameter(str(exc), ctx, param) from None
        return command(*args, settings=settings, **kwargs)

    hints, helps = typing.get_type_hints(Settings), field_help(Settings)
    for field in reversed(fields):
        run = setting_option(field, hints[field.name], helps[field.name])(run)
    return run


def agent_sources(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say which agents to serve, shared by `server` and `agents`."""
    for option in reversed(
        [
            click.argument("files", nargs=-1),
            click.option(
                "--plugin",
                "plugins",
                multiple=True,
                metavar="NAME",
                help="Serve an installed plugin's agents (entry-point name or module).",
            ),
            click.option(
                "--all-plugins", is_flag=True, help="Serve every installed plugin's agents."
            ),
        ]
    ):
        command = option(command)
    return command


@click.group()
@click.version_option(__version__, prog_name="myagent-ws")
def cli() -> None:
    """Serve Python LLM agents over one WebSocket endpoint."""


@cli.command()
@agent_sources
@click.option("--default", "default_agent", help="Agent used when a client names none.")
@settings_options
def server(
    files: tuple[str, ...],
    plugins: tuple[str, ...],
    all_plugins: bool,
    default_agent: str | None,
    settings: Settings,
) -> None:
    """Serve the agents of FILES (Python files) and plugins until Ctrl-C.

    Every setting is a flag and a MYAGENT_WS_ environment variable; the flag wins."""
    from aiohttp import web

    from .app import create_app, model_for
    from .gate import AccessLogger, describe_origins, is_loopback
    from .keys import GATE

    debug, host, port = settings.debug, settings.host, settings.port
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # No line per request or per event unless --debug: access log, HTTP client, SDK.
        for name in ("aiohttp.access", "httpx2", "httpx", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        registry, pm = _load(files, plugins, all_plugins, default_agent, click.echo)
        llm = model_for(settings)
    except StartupError as exc:
        _fail(exc, debug)
    info = llm.describe()
    if info.get("offline"):
        click.echo(
            "🧠 LLM: built-in offline model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
        )
    else:
        click.echo(f"🧠 LLM: {info.get('model')} at {info.get('base_url') or 'api.openai.com'}")
    if settings.store == "memory":
        click.echo("🗄  sessions: in this process (--store redis://HOST:PORT/DB to share them)")
    else:
        from .redis_store import redacted

        click.echo(
            f"🗄  sessions: Redis at {redacted(settings.store)}, keys {settings.store_prefix}*"
        )
    try:  # a bad tokens file stops start-up here, in one line
        app = create_app(settings, registry, pm=pm, model=llm, handle_signals=True)
    except StartupError as exc:
        _fail(exc, debug)
    auth = app[GATE].auth
    auth_on = auth.enabled
    click.echo(f"{'🔒' if auth_on else '🔓'} auth: {auth.describe()}")
    click.echo(f"   browser origins: {describe_origins(settings)}")
    if not auth_on and not is_loopback(host):
        click.echo(
            f"⚠️  auth is off on {host}: anyone on the network, and any web page a visitor "
            "opens (DNS rebinding), can use every agent; set --auth-token."
        )
    shown = "localhost" if host in ("0.0.0.0", "::", "localhost") else host
    click.echo(f"🚀 MyAgent WebSocket server running at ws://{shown}:{port}")
    operator = f"http://{shown}:{settings.health_port or port}"
    click.echo(f"   console: http://{shown}:{port}/   health: {operator}/health")
    files_note = raise_open_files_limit(settings.max_sessions + FILES_HEADROOM)
    if files_note:
        click.echo(files_note)
    if settings.reload:
        from .reload import install as watch_for_edits

        click.echo(watch_for_edits(app, files, pm, default_agent, debug=debug))
    try:
        loop = fast_event_loop(settings.event_loop)
    except StartupError as exc:
        _fail(exc, debug)
    if loop is not None:
        click.echo("🔁 event loop: uvloop")
    else:
        click.echo("🔁 event loop: asyncio (pip install 'myagent-ws[uvloop]' for a faster one)")
    tune_gc()
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        backlog=LISTEN_BACKLOG,
        loop=loop,
        # Also how long a new connection has to send its whole request (slowloris).
        keepalive_timeout=settings.handshake_timeout_s,
        access_log_class=AccessLogger,
        handle_signals=False,  # the app's own drain on SIGTERM/SIGINT (drain.py)
    )


def fast_event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop | None:
    """A uvloop event loop if chosen, or by default if the optional extra is installed
    (measured: 5-20% less server CPU per event on the offline load), else None for
    asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError(
                "--event-loop uvloop needs uvloop: pip install 'myagent-ws[uvloop]'."
            ) from None
        return None
    return uvloop.new_event_loop()


# Young objects the collector lets pile up before a pass (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector from pausing every stream at once.

    Its full passes walk every tracked object: with 1,000 active sessions that took about
    150 ms, eight times in a 45-second benchmark, and routing latency's p99 was those
    pauses. Everything loaded at start-up (the SDK's ~100,000 objects among it) lives as
    long as the process, so it is frozen out of the collector's sight; and since a turn
    leaves no cyclic garbage (a test holds that), young passes can wait for 50,000 new
    objects instead of 700, which promotes far fewer in-flight objects to the old
    generation and so makes full passes rare."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# Connections arriving at once wait in the kernel's accept queue; aiohttp's default of 128
# drops a burst of reconnecting clients (the kernel caps this at net.core.somaxconn).
LISTEN_BACKLOG = 4096
# File descriptors beyond one per session: LLM requests in flight, listeners, logs.
FILES_HEADROOM = 1024


def raise_open_files_limit(wanted: int) -> str | None:
    """Raise the soft open-files limit to the hard limit (each connection is a file); a
    one-line note when even that is below `wanted`, else None."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (
            f"⚠️  open-files limit is {soft}, below the {wanted} that --max-sessions needs; "
            "raise it (ulimit -n, or LimitNOFILE= in systemd) or lower --max-sessions."
        )
    return None


@cli.command()
@agent_sources
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def agents(
    files: tuple[str, ...], plugins: tuple[str, ...], all_plugins: bool, debug: bool
) -> None:
    """List the agents of FILES and plugins: name, source, description, tools."""
    try:
        registry, _ = _load(files, plugins, all_plugins, None, lambda _line: None)
    except StartupError as exc:
        _fail(exc, debug)
    rows = [("NAME", "SOURCE", "DESCRIPTION", "TOOLS")] + [
        (s.name, s.source, s.description, ", ".join(s.tools)) for s in registry.specs.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        click.echo("  ".join([*cells, row[3]]))


@cli.command()
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def plugins(debug: bool) -> None:
    """Print the installed plugins as JSON: name, entry-point group, distribution, hooks."""
    from .plugins import installed_plugins, load_plugin, make_plugin_manager, plugin_report

    pm = make_plugin_manager()
    try:
        for plugin in installed_plugins():
            load_plugin(pm, plugin.name)
    except StartupError as exc:
        _fail(exc, debug)
    click.echo(json.dumps(plugin_report(pm), indent=2))


@cli.command()
@click.argument("url", default="ws://127.0.0.1:8080/")
@click.option("--agent", metavar="NAME", help="The agent to talk to  [default: the server's]")
@click.option(
    "--token",
    metavar="T",
    envvar="MYAGENT_WS_TOKEN",
    show_envvar=True,
    help="Bearer token, for a server with auth on (the variable keeps it off the command line).",
)
def chat(url: str, agent: str | None, token: str | None) -> None:
    """Chat with an agent of the server at URL  [default: ws://127.0.0.1:8080/].

    Answers stream in, tool calls show as one line each, a tool that asks first is
    approved with y/n. Ctrl-C cancels the running turn, Ctrl-D or /quit exits; /agents
    lists the agents, /new [NAME] starts a new session. A dropped link reconnects by itself
    and the turn goes on. Piped input is read line by line."""
    from .chat import main  # prompt_toolkit is loaded only for this command

    sys.exit(main(url, agent, token))
