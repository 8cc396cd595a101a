"""One WebSocket connection: the only reader, a dispatch table, and one bounded send queue.

Only the handler task reads the socket (aiohttp forbids receive() from two tasks) and only
the writer task writes it, so a slow client fills its own queue, never a turn's. The
connection knows sessions by id and nothing about agents or models.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import __version__
from .protocol import (
    PROTOCOL_VERSION,
    Protocol,
    ProtocolError,
    encode,
    make_event,
    requested_agent,
)
from .sessions import SessionManager

log = logging.getLogger(__name__)
frames_log = logging.getLogger("myagent_ws.frames")

_ids = itertools.count(1)
_CLOSE = None  # queue sentinel: the writer stops after everything queued before it


class Connection:
    """Reads frames, dispatches them to the session manager, and writes what sessions emit."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        sessions: SessionManager,
        protocol: Protocol,
        *,
        queue_size: int,
        debug: bool = False,
    ) -> None:
        self.id = f"c_{next(_ids)}"
        self.ws = ws
        self.sessions = sessions
        self.protocol = protocol
        self.debug = debug
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._overflowed = False
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "user.message": self._on_message,
            "user.ack": self._on_ack,
            "user.create_session": self._on_create_session,
            "user.cancel": self._on_cancel,
            "user.end_session": self._on_end_session,
            "user.list_agents": self._on_list_agents,
            "user.reconnect": self._on_reconnect,
            "user.response": self._on_response,
        }

    # -- sending ---------------------------------------------------------------------

    def send(self, frame: str) -> None:
        """Queue one encoded frame; a client too slow to drain its queue is disconnected."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            if not self._overflowed:
                self._overflowed = True
                log.warning("connection %s: send queue full, disconnecting", self.id)
                if self._writer is not None:
                    self._writer.cancel()

    def send_event(self, event: dict[str, Any]) -> None:
        self.send(encode(event))

    async def _write(self) -> None:
        ws, queue = self.ws, self.queue
        try:
            while True:
                frame = await queue.get()
                if frame is _CLOSE:
                    return
                if self.debug:
                    frames_log.debug("%s >> %s", self.id, frame)
                await ws.send_str(frame)
        except asyncio.CancelledError:
            if self._overflowed:  # closing ends the reader loop, which cleans up
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"send queue full")
            raise
        except ConnectionError:
            return  # the peer is gone; the reader loop sees the close

    # -- reading ---------------------------------------------------------------------

    async def serve(self, agents: list[str]) -> None:
        """Run the connection until the peer or the server closes it."""
        self._writer = asyncio.create_task(self._write(), name=f"writer {self.id}")
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
                    self._reply_error(
                        ProtocolError(
                            "unsupported_frame",
                            "Binary frames are not supported; send each event as JSON text.",
                        )
                    )
        finally:
            self.sessions.detach(self)
            await self.close()

    async def _handle(self, data: str) -> None:
        if self.debug:
            frames_log.debug("%s << %s", self.id, data)
        try:
            message = self.protocol.decode(data)
            await self._handlers[message["event"]](message)
        except ProtocolError as exc:
            self._reply_error(exc)
        except Exception:
            log.exception("connection %s: handling a frame failed", self.id)
            self._reply_error(
                ProtocolError(
                    "internal_error", "The server failed to handle that message; try again."
                )
            )

    def _reply_error(self, exc: ProtocolError) -> None:
        self.sessions.metrics.inbound_error(exc.code)
        self.send_event(exc.to_event())

    # -- handlers: one per client event ------------------------------------------------

    async def _on_create_session(self, message: dict[str, Any]) -> None:
        await self.sessions.create(requested_agent(message), self)

    async def _on_message(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        self.sessions.start_turn(session, message["content"])

    async def _on_cancel(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        if not await self.sessions.cancel_turn(session):
            self._notice("No turn is running in this session; nothing to cancel.", session.id)

    async def _on_end_session(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        await self.sessions.end(session, "ended by client")

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
        if isinstance(event_id, str) and ":" in event_id:
            session_id, _, seq_text = event_id.rpartition(":")
            last_seq = int(seq_text) if seq_text.isdigit() else None
        if session_id and isinstance(last_seq, int):
            await self.sessions.ack(session_id, self, last_seq)

    async def _on_response(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        self._notice(
            f"Nothing in this session is waiting for confirmation of step {message['step_id']!r}.",
            session.id,
        )

    def _notice(self, text: str, session_id: str | None = None) -> None:
        self.send_event(make_event("system.notice", session_id=session_id, content=text))

    # -- closing ---------------------------------------------------------------------

    async def close(self, code: int = WSCloseCode.OK, timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by timeout_s), then close the socket."""
        writer = self._writer
        if writer is not None and not writer.done():
            try:
                self.queue.put_nowait(_CLOSE)
                await asyncio.wait_for(asyncio.shield(writer), timeout_s)
            except (asyncio.QueueFull, TimeoutError):
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if not self.ws.closed:
            await self.ws.close(code=code)
