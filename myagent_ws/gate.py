"""Admission before the WebSocket upgrade, and POST /auth/ticket.

In order: the Origin allow-list (403, against cross-site WebSocket hijacking), the
failed-authentication rate per client (429), the credential (401), the open connections
per client (429). Every refusal is an HTTP status with a JSON body of one sentence, sent
before any WebSocket exists. The client is the peer's address, or the one a trusted
proxy's X-Forwarded-For names; an IPv6 client counts as its /64, which one host holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .auth import SECRET_PARAMS, Auth, AuthFailed, stray_bearer
from .settings import Settings
from .store import StoreUnavailable

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Clients whose failed authentications are remembered at most; past it, those that have
# cooled down are forgotten first, then the longest quiet.
MAX_TRACKED_CLIENTS = 100_000
# Longest piece of a client's Origin quoted back in a refusal.
MAX_ECHO = 60
STORE_DOWN = "The session store is unreachable, so tickets cannot be checked; try again soon."

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True)
class Admission:
    """A request let through: who it is and where it comes from."""

    principal: str | None
    ip: str


def refusal(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The JSON answer to a request that is not let through."""
    return web.json_response(
        {"error": code, "message": message}, status=status, headers=headers or None
    )


def _normal_origin(origin: str) -> str:
    """scheme://host[:port] as a browser sends it, for comparing."""
    return origin.strip().rstrip("/").lower()


def _address(text: str | None) -> Address | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4), or None if `text` is none."""
    try:
        ip = ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _client_key(ip: Address) -> str:
    """What the per-client limits count: the address, or an IPv6 address's /64."""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def is_loopback(host: str) -> bool:
    """Whether `host` (a name the server listens on) is this machine only."""
    ip = _address(host)
    return host in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)


def describe_origins(settings: Settings) -> str:
    """For the banner: which browser origins may connect."""
    origins = settings.allowed_origins
    if "*" in origins:
        return "any (--allowed-origin '*')"
    return "this server's own, " + (
        ", ".join(origins) if origins else "localhost and 127.0.0.1 on any port"
    )


class Gate:
    """Decides, per request, whether it may open a WebSocket or fetch a ticket."""

    def __init__(self, settings: Settings, auth: Auth) -> None:
        self.auth = auth
        self.settings = settings
        origins = settings.allowed_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(_normal_origin(o) for o in origins if o != "*")
        # Without an allow-list, local front ends (any port) may connect.
        self.local_origins = not origins
        proxies = settings.forwarded_allow_ips
        self.trust_any_proxy = "*" in proxies
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in proxies if p != "*"]
        # A server listening on loopback only is reached by name only as localhost: a
        # page whose own host name resolves to 127.0.0.1 (DNS rebinding) is not its origin.
        self.loopback_only = is_loopback(settings.host)
        self.fail_rate = settings.max_auth_failures_per_ip / 60.0  # forgiven per second
        self.failures: dict[str, tuple[float, float]] = {}  # client -> (level, at), oldest first
        self.open: dict[str, int] = {}  # client -> open WebSocket connections

    # -- who and from where ----------------------------------------------------------------

    def client_ip(self, request: web.Request) -> str:
        """The client the per-client limits count: the peer, or the nearest address a
        trusted proxy's X-Forwarded-For names (an IPv6 one as its /64)."""
        client = _address(request.remote)
        if client is None:  # not an IP socket
            return request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and self._trusted(client):
            for hop in reversed(forwarded.split(",")):  # each proxy appended one
                address = _address(hop)
                if address is None:  # not an address: trust the header no further
                    break
                client = address
                if not self._trusted(address):
                    break
        return _client_key(client)

    def _trusted(self, ip: Address) -> bool:
        return self.trust_any_proxy or any(ip in network for network in self.proxies)

    def origin_allowed(self, request: web.Request) -> bool:
        """No Origin (not a browser), the server's own, or one on the allow-list."""
        origin = request.headers.get("Origin")
        if origin is None or self.any_origin:
            return True
        normal = _normal_origin(origin)
        if normal in self.origins:
            return True
        parts = urlsplit(normal)
        if parts.scheme not in ("http", "https"):
            return False  # "null" (a file:// page, a sandboxed frame) and others
        if parts.netloc == request.host.lower() and (
            not self.loopback_only or parts.hostname in LOOPBACK_NAMES
        ):
            return True
        return self.local_origins and parts.hostname in LOOPBACK_NAMES

    # -- failed authentications --------------------------------------------------------------

    def _level(self, client: str, now: float) -> float:
        level, at = self.failures.get(client, (0.0, now))
        return max(0.0, level - (now - at) * self.fail_rate)

    def _retry_after(self, client: str) -> int:
        """Seconds until `client` may try to authenticate again (0: now)."""
        if client not in self.failures:
            return 0
        limit = self.settings.max_auth_failures_per_ip
        over = self._level(client, time.monotonic()) - (limit - 1)
        return 0 if over <= 0 else max(1, math.ceil(over / self.fail_rate))

    def _failed(self, client: str) -> None:
        now = time.monotonic()
        failures = self.failures
        if client not in failures and len(failures) >= MAX_TRACKED_CLIENTS:
            self.failures = failures = {
                k: v for k, v in failures.items() if self._level(k, now) > 0
            }
            while len(failures) >= MAX_TRACKED_CLIENTS:
                del failures[next(iter(failures))]  # the longest quiet
        level = self._level(client, now) + 1
        failures.pop(client, None)
        failures[client] = (level, now)
        if level >= self.settings.max_auth_failures_per_ip:
            log.warning("authentication failures from %s reached the limit; refusing it", client)

    # -- admission -----------------------------------------------------------------------------

    def subprotocol_refusal(self, request: web.Request) -> web.Response | None:
        """A bearer.<token> offer without myagent-ws, refused before the handshake (whose
        log line would name the offered protocols, token and all)."""
        if not stray_bearer(request):
            return None
        return refusal(
            400,
            "bad_subprotocol",
            "Offer the token with the protocol it belongs to: "
            "Sec-WebSocket-Protocol: myagent-ws, bearer.<token>.",
        )

    async def identify(
        self, request: web.Request, *, tickets: bool = True
    ) -> tuple[str | None, str] | web.Response:
        """(principal, client), or the response that refuses the request."""
        client = self.client_ip(request)
        if not self.origin_allowed(request):
            origin = request.headers["Origin"]
            shown = origin if len(origin) <= MAX_ECHO else origin[: MAX_ECHO - 1] + "…"
            return refusal(
                403,
                "forbidden_origin",
                f"Connections from the origin {shown!r} are not allowed; the server's "
                "operator can add it with --allowed-origin.",
            )
        if self.auth.enabled and (wait := self._retry_after(client)):
            return refusal(
                429,
                "too_many_failures",
                f"Too many failed authentications from this address; try again in {wait} s.",
                **{"Retry-After": str(wait)},
            )
        try:
            async with asyncio.timeout(self.settings.handshake_timeout_s):
                return await self.auth.identify(request, tickets=tickets), client
        except AuthFailed as exc:
            self._failed(client)
            return refusal(401, "unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"})
        except StoreUnavailable as exc:
            log.error("authentication: the session store failed: %s", exc)
            return refusal(503, "store_unavailable", STORE_DOWN)
        except TimeoutError:
            log.error("an authenticate hook took over %g s", self.settings.handshake_timeout_s)
            return refusal(503, "auth_timeout", "Authentication took too long; try again.")
        except Exception:
            self._failed(client)  # counted, so a request that breaks a hook cannot flood
            log.exception("an authenticate hook failed")
            return refusal(
                500, "internal_error", "Authentication failed on the server; see its log."
            )

    async def admit(self, request: web.Request) -> Admission | web.Response:
        """Let a WebSocket upgrade through, counting it against its client, or refuse it."""
        found = await self.identify(request)
        if isinstance(found, web.Response):
            return found
        principal, client = found
        limit = self.settings.max_connections_per_ip
        held = self.open.get(client, 0)
        if limit and held >= limit:
            return refusal(
                429,
                "too_many_connections",
                f"This address already has {held} open connections to this server, the "
                "limit; close one first.",
                **{"Retry-After": "1"},
            )
        self.open[client] = held + 1
        return Admission(principal, client)

    def release(self, admission: Admission) -> None:
        """A connection admitted by `admit` has closed."""
        left = self.open.get(admission.ip, 0) - 1
        if left > 0:
            self.open[admission.ip] = left
        else:
            self.open.pop(admission.ip, None)

    # -- POST /auth/ticket -------------------------------------------------------------------

    def cors(self, request: web.Request) -> dict[str, str]:
        """CORS headers for an allowed cross-origin caller (none for others). With any
        origin allowed, cookies never go along: any site could act as the signed-in user."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
        if not self.any_origin:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    async def ticket(self, request: web.Request) -> web.Response:
        """POST /auth/ticket: a single-use ticket for a WebSocket URL (?ticket=)."""
        found = await self.identify(request, tickets=False)
        if isinstance(found, web.Response):
            if found.status != 403:  # an allowed page may read why (401: stop retrying)
                found.headers.update(self.cors(request))
            return found
        try:
            body = await self.auth.issue_ticket(found[0])
        except StoreUnavailable as exc:
            log.error("issuing a ticket: the session store failed: %s", exc)
            return refusal(503, "store_unavailable", STORE_DOWN, **self.cors(request))
        return web.json_response(body, headers={**self.cors(request), "Cache-Control": "no-store"})

    async def ticket_preflight(self, request: web.Request) -> web.Response:
        """OPTIONS /auth/ticket."""
        return self.preflight(request, "This origin may not fetch tickets.")

    def preflight(self, request: web.Request, refused: str) -> web.Response:
        """A CORS preflight for a POST, answered for allowed origins only."""
        if request.headers.get("Origin") is None or not self.origin_allowed(request):
            return refusal(403, "forbidden_origin", refused)
        return web.Response(
            status=204,
            headers={
                **self.cors(request),
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log (on with --debug), with the values of ticket= and token=
    hidden: the query is rebuilt from its parsed form, so an encoded name (tok%65n) is
    caught like a plain one."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = [(k, "***" if k in SECRET_PARAMS else v) for k, v in request.query.items()]
        path = request.path + ("?" + urlencode(query, safe="*") if query else "")
        self.logger.info(
            '%s "%s %s" %s %.3fs', request.remote, request.method, path, response.status, time
        )
