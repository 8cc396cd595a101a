"""Who is connecting: configured tokens, single-use tickets, and the `authenticate` hook.

Auth is on when tokens are configured or a plugin implements `authenticate`. Then a
WebSocket upgrade must carry one credential, looked for in this order:
`?ticket=` (from POST /auth/ticket: browsers cannot set headers on a WebSocket),
`Authorization: Bearer <token>`, the subprotocol offer `myagent-ws, bearer.<token>`, and
`?token=` (the least safe: URLs end up in proxy and browser logs). A token nobody
configured goes to the plugins, which may know it (a JWT, say) or read a cookie.

A principal is a non-empty string naming who it is; sessions belong to the principal that
created them. Tokens are looked up by their SHA-256, so lookup time says nothing about
how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from .registry import StartupError
from .settings import Settings
from .store import Store

# The subprotocol the server selects; an offer may add `bearer.<token>` after it.
SUBPROTOCOL = "myagent-ws"
# The AG-UI binding of the same endpoint (docs/agui.md); `bearer.<token>` may go with it too.
AGUI_SUBPROTOCOL = "ag-ui"
SPOKEN = (SUBPROTOCOL, AGUI_SUBPROTOCOL)
BEARER_PROTOCOL = "bearer."
# Longest ticket or token looked at (a ticket is 43 characters).
MAX_CREDENTIAL_LENGTH = 4096
# Query parameters that carry credentials, redacted from every log line.
SECRET_PARAMS = ("ticket", "token")

NO_CREDENTIAL = (
    "This server requires a credential: send the header Authorization: Bearer <token>; "
    "from a browser, connect with ?ticket= from POST /auth/ticket, or offer the "
    "subprotocols myagent-ws, bearer.<token>."
)
BAD_TOKEN = "The token is not valid for this server; check it with the server's operator."
BAD_TICKET = (
    "The ticket is unknown, already used or expired; fetch a new one from POST /auth/ticket "
    "right before connecting (each ticket opens one connection)."
)


class AuthFailed(Exception):
    """No credential, or one that names no principal; the message says what to send."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def load_tokens(settings: Settings) -> dict[bytes, str]:
    """SHA-256 of each configured token -> its principal. A bare --auth-token is named
    by a fingerprint (token-1a2b3c4d); a file line `name:token` by its name (two lines
    with one name are one principal with two tokens, for rotation)."""
    tokens: dict[bytes, str] = {}

    def add(token: str, name: str, where: str) -> None:
        digest = _digest(token)
        if tokens.get(digest, name) != name:
            raise StartupError(f"{where}: a token given for {tokens[digest]!r} is given again.")
        tokens[digest] = name

    for token in settings.auth_tokens:
        add(token, f"token-{_digest(token).hex()[:8]}", "--auth-token")
    if settings.auth_tokens_file:
        path = Path(settings.auth_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StartupError(f"Cannot read --auth-tokens-file {path}: {reason}.") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, colon, token = (part.strip() for part in line.partition(":"))
            if not colon or not name or not token:
                raise StartupError(
                    f"{path}, line {number}: expected name:token (the name is the principal)."
                )
            add(token, name, f"{path}, line {number}")
    return tokens


class Auth:
    """Finds the principal of a request, and issues and redeems tickets."""

    def __init__(self, settings: Settings, hook: Any, store: Store) -> None:
        self.tokens = load_tokens(settings)
        self.hook = hook if hook.authenticate.get_hookimpls() else None
        self.enabled = bool(self.tokens) or self.hook is not None
        self.store = store
        self.ticket_ttl_s = settings.auth_ticket_ttl_s

    def describe(self) -> str:
        """For the banner: whether auth is on, and by what."""
        if not self.enabled:
            return "off: anyone who reaches the port may connect (--auth-token to require one)"
        sources = ["authenticate plugin"] if self.hook is not None else []
        if principals := len(set(self.tokens.values())):
            sources.insert(0, f"{principals} principal{'s' if principals != 1 else ''} by token")
        return "on: " + ", ".join(sources)

    async def identify(self, request: web.Request, *, tickets: bool = True) -> str | None:
        """The request's principal (None when auth is off); AuthFailed when it has none.
        `tickets`: whether a ticket counts (not when asking for one)."""
        if not self.enabled:
            return None
        query = request.query
        ticket = query.get("ticket") if tickets else None
        if ticket is not None:
            principal = None
            if 0 < len(ticket) <= MAX_CREDENTIAL_LENGTH:
                principal = await self.store.redeem_ticket(ticket)
            if not principal:
                raise AuthFailed(BAD_TICKET)
            return principal
        presented = [
            t
            for t in (_bearer(request), _offered(request), query.get("token"))
            if t and len(t) <= MAX_CREDENTIAL_LENGTH
        ]
        for token in presented:
            principal = self.tokens.get(_digest(token))
            if principal is not None:
                return principal
        if self.hook is not None and (principal := await self._ask_plugins(request)):
            return principal
        raise AuthFailed(BAD_TOKEN if presented else NO_CREDENTIAL)

    async def _ask_plugins(self, request: web.Request) -> str | None:
        """The first principal an authenticate implementation names, in pluggy's call
        order. Called one by one rather than through pluggy's firstresult, which would
        stop at an async implementation's coroutine even when it comes to None."""
        for impl in reversed(self.hook.authenticate.get_hookimpls()):
            principal = impl.function(**({"request": request} if impl.argnames else {}))
            if inspect.isawaitable(principal):
                principal = await principal
            if principal is None:
                continue
            if not isinstance(principal, str) or not principal:
                raise TypeError(
                    f"the authenticate hook of {impl.plugin_name} returned "
                    f"{type(principal).__name__}; it must return a non-empty string (the "
                    "principal) or None"
                )
            return principal
        return None

    async def issue_ticket(self, principal: str | None) -> dict[str, Any]:
        """A new single-use ticket for `principal`: the body of POST /auth/ticket."""
        ticket = secrets.token_urlsafe(32)
        if self.enabled:  # with auth off tickets are ignored: nothing to keep
            await self.store.issue_ticket(ticket, principal or "", self.ticket_ttl_s)
        ttl = self.ticket_ttl_s
        return {"ticket": ticket, "expires_in": int(ttl) if ttl == int(ttl) else ttl}


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [offer.strip() for offer in header.split(",") if offer.strip()]


def _offered(request: web.Request) -> str | None:
    """The token of a `bearer.<token>` offer made beside `myagent-ws` (or `ag-ui`), if any."""
    offers = _protocols(request)
    if any(spoken in offers for spoken in SPOKEN):
        for offer in offers:
            if offer.startswith(BEARER_PROTOCOL):
                return offer[len(BEARER_PROTOCOL) :]
    return None


def stray_bearer(request: web.Request) -> bool:
    """Whether a `bearer.<token>` offer comes without `myagent-ws` or `ag-ui` (aiohttp
    would log the offer, token and all, as protocols it does not speak)."""
    offers = _protocols(request)
    return not any(spoken in offers for spoken in SPOKEN) and any(
        o.startswith(BEARER_PROTOCOL) for o in offers
    )
