"""One WebSocket connection: the only reader, and a dispatch table.

Only the handler task reads the socket (aiohttp forbids receive() from two tasks); the
sending half, shared with sessions through the Reader protocol, is `Outbound`. Every
frame is decoded and validated once, counted against the rate limit (acks are exempt),
and dispatched to the session manager. The connection knows sessions, never agents.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiolimiter import AsyncLimiter

from . import __version__
from .outbound import CLOSE_SLOW_CONSUMER, Outbound, frames_log, log, new_reader_id
from .protocol import (
    PROTOCOL_VERSION,
    Protocol,
    ProtocolError,
    encode,
    make_event,
    requested_agent,
)
from .sessions import SessionManager, forbidden
from .settings import Settings
from .store import StoreUnavailable, store_down

__all__ = ["CLOSE_SLOW_CONSUMER", "Connection"]


class RateLimit:
    """Inbound frames per connection: a leaky bucket, and a refusal that says when to send
    again (for any binding of the endpoint: ours and ag-ui)."""

    def __init__(self, settings: Settings) -> None:
        burst, per_s = settings.rate_limit_burst, settings.rate_limit_per_s
        self._limiter = AsyncLimiter(burst, burst / per_s)
        # A leaky bucket frees one frame's room at most 1/rate seconds after it is full.
        self._retry_after_ms = math.ceil(1000 / per_s)
        self._text = f"{per_s:g} per second"

    async def admit(self, session_id: str | None = None, event: str | None = None) -> None:
        """Take one frame's room, or raise rate_limited (naming the frame's session and
        event, when known, so a client knows which frame to send again)."""
        if not self._limiter.has_capacity():
            raise ProtocolError(
                "rate_limited",
                f"Too many messages: this server accepts {self._text} per connection; "
                f"wait {self._retry_after_ms} ms and send again.",
                session_id=session_id,
                retry_after_ms=self._retry_after_ms,
                **({"refused_event": event} if event else {}),
            )
        await self._limiter.acquire()  # has room, so it does not wait


class Connection(Outbound):
    """Reads frames and dispatches them to the session manager."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        sessions: SessionManager,
        protocol: Protocol,
        settings: Settings,
        transport: asyncio.BaseTransport | None = None,
        principal: str | None = None,
    ) -> None:
        super().__init__(
            new_reader_id("c"),
            ws,
            transport,
            settings.send_buffer_bytes,
            sessions.metrics,
            settings.debug,
        )
        self.sessions = sessions
        self.protocol = protocol
        self.principal = principal  # who authenticated; sessions it creates are its own
        self._rate = RateLimit(settings)

    def send_event(self, event: dict[str, Any]) -> None:
        self.send(encode(event))

    # -- reading ---------------------------------------------------------------------------

    async def serve(self, agents: list[str]) -> None:
        """Run the connection until the peer or the server closes it."""
        self.send_event(
            make_event(
                "system.connected",
                content="Connected to myagent-ws.",
                metadata={
                    "connection_id": self.id,
                    "server_version": __version__,
                    "protocol_version": PROTOCOL_VERSION,
                    "agents": agents,
                },
            )
        )
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    await self._handle(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._handle_binary()
        finally:
            self.sessions.detach(self)
            await self.close()

    async def _handle(self, data: str) -> None:
        if self.debug:
            frames_log.debug("%s << %s", self.id, data)
        message: dict[str, Any] | None = None
        try:
            try:
                message = self.protocol.decode(data)
            except ProtocolError:
                await self._admit()  # bad frames count too; past the rate, that is the answer
                raise
            if message["event"] != "user.ack":
                await self._admit(message.get("session_id"), message["event"])
            await _HANDLERS[message["event"]](self, message)
        except ProtocolError as exc:
            if exc.code == "session_not_found" and await self._others(exc.session_id):
                exc = forbidden(exc.session_id)
            self._reply_error(exc)
        except StoreUnavailable as exc:
            log.error("connection %s: the session store failed: %s", self.id, exc)
            self._reply_error(store_down(message and message.get("session_id")))
        except Exception:
            log.exception("connection %s: handling a frame failed", self.id)
            self._reply_error(
                ProtocolError(
                    "internal_error", "The server failed to handle that message; try again."
                )
            )

    async def _handle_binary(self) -> None:
        try:
            await self._admit()
            raise ProtocolError(
                "unsupported_frame",
                "Binary frames are not supported; send each event as JSON text.",
            )
        except ProtocolError as exc:
            self._reply_error(exc)

    async def _admit(self, session_id: str | None = None, event: str | None = None) -> None:
        await self._rate.admit(session_id, event)

    async def _others(self, session_id: str | None) -> bool:
        """Whether a session this connection may not use is another principal's (if the
        store cannot say, the answer stays session_not_found)."""
        if session_id is None:
            return False
        try:
            return await self.sessions.belongs_to_another(session_id, self)
        except StoreUnavailable:
            return False

    def _reply_error(self, exc: ProtocolError) -> None:
        self.sessions.metrics.inbound_error(exc.code)
        self.send_event(exc.to_event())

    # -- handlers: one per client event ------------------------------------------------------

    async def _on_create_session(self, message: dict[str, Any]) -> None:
        await self.sessions.create(requested_agent(message), self)

    async def _on_message(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        message_id = (message.get("metadata") or {}).get("message_id")
        if message_id is not None and await session.repeated(message_id):
            return  # a client's resend of a message that arrived: its turn is under way
        try:
            ahead = await session.start_turn(message["content"])
        except BaseException:
            if message_id is not None:  # refused (busy, draining...): a resend may run
                await session.forget(message_id)
            raise
        if ahead:  # on_busy=queue: say so, since its events come only later
            after = "." if ahead == 1 else f" and the {ahead - 1} queued before it."
            self._notice(
                f"Queued: this message runs after the running turn{after}",
                session.id,
                queued=ahead,
            )

    async def _on_cancel(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        if not await session.cancel("the turn was cancelled."):
            self._notice("No turn is running in this session; nothing to cancel.", session.id)

    async def _on_end_session(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        await self.sessions.end(session, "ended", "ended by client")

    async def _on_list_agents(self, message: dict[str, Any]) -> None:
        self.send_event(make_event("system.agents", content=self.sessions.registry.describe()))

    async def _on_reconnect(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        last_seq = content.get("last_seq", 0) if isinstance(content, dict) else 0
        await self.sessions.reconnect(message["session_id"], self, last_seq)

    async def _on_ack(self, message: dict[str, Any]) -> None:
        content = message["content"]
        session_id = message.get("session_id")
        last_seq = content.get("last_seq")
        event_id = content.get("last_event_id")
        if event_id is not None:  # the schema holds it to "<session_id>:<digits>"
            session_id, _, seq_text = event_id.rpartition(":")
            last_seq = int(seq_text)
        session = self.sessions.sessions.get(session_id) if session_id else None
        if session is None or self not in session.connections:
            # Not this connection's: ignored, as acks of ended sessions are, unless it is
            # another principal's (then counted like any frame, and refused).
            if session_id and self.principal is not None:
                await self._admit()
                if await self.sessions.belongs_to_another(session_id, self):
                    raise forbidden(session_id)
            return
        if isinstance(last_seq, int) and self.acknowledge(session, last_seq):
            session.trim_acknowledged()

    async def _on_response(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        content = message["content"]
        approved = content.get("approved", content.get("confirmed"))  # the schema wants one
        await session.respond(message["step_id"], approved, content.get("feedback"))

    def _notice(self, text: str, session_id: str | None = None, **metadata: Any) -> None:
        self.send_event(
            make_event(
                "system.notice", session_id=session_id, content=text, metadata=metadata or None
            )
        )


# One handler per client event, shared by every connection.
_HANDLERS: dict[str, Callable[[Connection, dict[str, Any]], Awaitable[None]]] = {
    "user.message": Connection._on_message,
    "user.ack": Connection._on_ack,
    "user.create_session": Connection._on_create_session,
    "user.cancel": Connection._on_cancel,
    "user.end_session": Connection._on_end_session,
    "user.list_agents": Connection._on_list_agents,
    "user.reconnect": Connection._on_reconnect,
    "user.response": Connection._on_response,
}
