"""Admission before the WebSocket upgrade, and POST /auth/ticket.

In order: the Origin allow-list (403, against cross-site WebSocket hijacking), the
failed-authentication rate per client IP (429), the credential (401), the open
connections per client IP (429). Every refusal is an HTTP status with a JSON body of one
sentence, sent before any WebSocket exists. The client IP is the peer's address, or the
client an X-Forwarded-For header names when the peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .auth import Auth, AuthFailed, redact
from .settings import Settings
from .store import StoreUnavailable

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Client IPs whose failures are remembered at most; past it, those that have cooled down
# are forgotten first.
MAX_TRACKED_IPS = 100_000


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
    return origin.strip().rstrip("/").lower()


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
        self.loopback_only = settings.host in LOOPBACK_NAMES or _is_loopback(settings.host)
        self.fail_rate = settings.max_auth_failures_per_ip / 60.0  # forgiven per second
        self.failures: dict[str, tuple[float, float]] = {}  # ip -> (level, at)
        self.open: dict[str, int] = {}  # ip -> open WebSocket connections

    # -- who and from where ----------------------------------------------------------------

    def client_ip(self, request: web.Request) -> str:
        """The peer, or the client a trusted proxy's X-Forwarded-For names."""
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded or not self._trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):  # the nearest hop a trusted proxy did not add
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        if self.trust_any_proxy:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

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

    def _level(self, ip: str, now: float) -> float:
        level, at = self.failures.get(ip, (0.0, now))
        return max(0.0, level - (now - at) * self.fail_rate)

    def _retry_after(self, ip: str) -> int:
        """Seconds until `ip` may try to authenticate again (0: now)."""
        if ip not in self.failures:
            return 0
        over = self._level(ip, time.monotonic()) - (self.settings.max_auth_failures_per_ip - 1)
        return 0 if over <= 0 else max(1, math.ceil(over / self.fail_rate))

    def _failed(self, ip: str) -> None:
        now = time.monotonic()
        if len(self.failures) >= MAX_TRACKED_IPS:
            self.failures = {k: v for k, v in self.failures.items() if self._level(k, now) > 0}
            if len(self.failures) >= MAX_TRACKED_IPS:
                self.failures.clear()
        level = self._level(ip, now) + 1
        self.failures[ip] = (level, now)
        if level >= self.settings.max_auth_failures_per_ip:
            log.warning("authentication failures from %s reached the limit; refusing it", ip)

    # -- admission -----------------------------------------------------------------------------

    async def identify(
        self, request: web.Request, *, tickets: bool = True
    ) -> tuple[str | None, str] | web.Response:
        """(principal, client IP), or the response that refuses the request."""
        ip = self.client_ip(request)
        if not self.origin_allowed(request):
            return refusal(
                403,
                "forbidden_origin",
                f"Connections from the origin {request.headers['Origin'][:100]!r} are not "
                "allowed; the server's operator can add it with --allowed-origin.",
            )
        if self.auth.enabled and (wait := self._retry_after(ip)):
            return refusal(
                429,
                "too_many_failures",
                f"Too many failed authentications from this address; try again in {wait} s.",
                **{"Retry-After": str(wait)},
            )
        try:
            return await self.auth.identify(request, tickets=tickets), ip
        except AuthFailed as exc:
            self._failed(ip)
            return refusal(401, "unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"})
        except StoreUnavailable as exc:
            log.error("authentication: the session store failed: %s", exc)
            return refusal(503, "store_unavailable", STORE_DOWN)
        except Exception:
            log.exception("an authenticate hook failed")
            return refusal(
                500, "internal_error", "Authentication failed on the server; see its log."
            )

    async def admit(self, request: web.Request) -> Admission | web.Response:
        """Let a WebSocket upgrade through, counting it against its IP, or refuse it."""
        found = await self.identify(request)
        if isinstance(found, web.Response):
            return found
        principal, ip = found
        limit = self.settings.max_connections_per_ip
        held = self.open.get(ip, 0)
        if limit and held >= limit:
            return refusal(
                429,
                "too_many_connections",
                f"This address already has {held} open connections to this server, the "
                "limit; close one first.",
                **{"Retry-After": "1"},
            )
        self.open[ip] = held + 1
        return Admission(principal, ip)

    def release(self, admission: Admission) -> None:
        """A connection admitted by `admit` has closed."""
        left = self.open.get(admission.ip, 0) - 1
        if left > 0:
            self.open[admission.ip] = left
        else:
            self.open.pop(admission.ip, None)

    # -- POST /auth/ticket -------------------------------------------------------------------

    def cors(self, request: web.Request) -> dict[str, str]:
        """CORS headers for an allowed cross-origin caller (none for others)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }

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
            return refusal(503, "store_unavailable", STORE_DOWN)
        return web.json_response(body, headers={**self.cors(request), "Cache-Control": "no-store"})

    async def ticket_preflight(self, request: web.Request) -> web.Response:
        """OPTIONS /auth/ticket: the CORS preflight, answered for allowed origins only."""
        if request.headers.get("Origin") is None or not self.origin_allowed(request):
            return refusal(403, "forbidden_origin", "This origin may not fetch tickets.")
        return web.Response(
            status=204,
            headers={
                **self.cors(request),
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )


STORE_DOWN = "The session store is unreachable, so tickets cannot be checked; try again soon."


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log (on with --debug) with ticket= and token= values hidden."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            time,
        )
