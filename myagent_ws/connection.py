"""One WebSocket connection: the only reader, a dispatch table, and one writer.

Only the handler task reads the socket (aiohttp forbids receive() from two tasks) and only
the writer task writes it. The writer takes frames from two places: a small queue of
connection-level frames (system.*), and each attached session's replay buffer at this
connection's own cursor. So a replay is a cursor set back, paced by the socket like any
other send; live events can never overtake replayed ones; and a slow client holds no copy
of anything.

A connection that falls behind (owing more than `send_buffer_bytes`, or half of a
session's replay buffer) makes that session's turn wait for it: a client that keeps
reading is never cut off. One that stays behind for `send_timeout_s`, owes twice the
bound, or would miss an event that left the replay buffer is closed with code 4008; its
sessions wait for a `user.reconnect`. The connection knows sessions, never agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiolimiter import AsyncLimiter

from . import __version__
from .protocol import (
    PROTOCOL_VERSION,
    Protocol,
    ProtocolError,
    encode,
    make_event,
    requested_agent,
)
from .sessions import Session, SessionManager
from .settings import Settings

log = logging.getLogger(__name__)
frames_log = logging.getLogger("myagent_ws.frames")

# Close code for a client that fell more than send_buffer_bytes behind (or behind the
# replay buffer): its sessions live on, and user.reconnect with last_seq resumes them.
CLOSE_SLOW_CONSUMER = 4008

_ids = itertools.count(1)


class _Cursor:
    """Where one connection is in one session's buffer."""

    __slots__ = ("acked", "live_from", "owed", "sent")

    def __init__(self, sent: int, live_from: int) -> None:
        self.sent = sent  # the last seq handed to the socket
        self.live_from = live_from  # seqs after this are live: counted in `pending`
        self.owed = 0  # of `pending`, the bytes of this session
        self.acked = sent  # the highest seq the client acknowledged


class Connection:
    """Reads frames, dispatches them to the session manager, writes what is owed."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        sessions: SessionManager,
        protocol: Protocol,
        settings: Settings,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.id = f"c_{next(_ids)}"
        self.ws = ws
        self.sessions = sessions
        self.protocol = protocol
        self.debug = settings.debug
        self.send_limit = settings.send_buffer_bytes
        self._progress = asyncio.Event()  # set by the writer as it sends
        # Bytes owed and not yet written: queued frames, plus live events of attached
        # sessions (a replay owes nothing new: those frames are in the buffer already).
        self.pending = 0
        self._queue: deque[bytes] = deque()
        self._cursors: dict[Session, _Cursor] = {}
        self._wake = asyncio.Event()
        self._closing = False  # write what is owed, then stop
        self._dropped = False  # too slow: stop at once
        self._transport = transport
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._limiter = AsyncLimiter(
            settings.rate_limit_burst, settings.rate_limit_burst / settings.rate_limit_per_s
        )
        # A leaky bucket frees one frame's room at most 1/rate seconds after it is full.
        self._retry_after_ms = math.ceil(1000 / settings.rate_limit_per_s)
        self._rate_text = f"{settings.rate_limit_per_s:g} per second"
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

    # -- what sessions call (the Reader protocol) -----------------------------------------

    def attach(self, session: Session, cursor: int) -> None:
        """Send `session` from the event after `cursor` on."""
        previous = self._cursors.get(session)
        if previous is not None:
            self.pending -= previous.owed
        self._cursors[session] = _Cursor(cursor, session.buffer.last_seq)
        self._wake.set()

    def notify(self, session: Session, size: int) -> bool:
        """A live event of `session` (`size` bytes) is in its buffer; True if this
        connection is now behind, so the producer should wait for it."""
        if self._dropped:
            return False
        self._cursors[session].owed += size
        return self._owe(size) and self.behind(session)

    def sent(self, session: Session) -> int:
        """The last seq of `session` handed to the socket (all of it, once dropped)."""
        cursor = self._cursors.get(session)
        return session.seq if cursor is None or self._dropped else cursor.sent

    def behind(self, session: Session) -> bool:
        """Whether this client lags too far to let `session` produce more for now."""
        cursor = self._cursors.get(session)
        if cursor is None or self._dropped or self._closing:
            return False
        buffer = session.buffer
        return (
            self.pending > self.send_limit
            or cursor.owed > buffer.max_bytes // 2
            or buffer.last_seq - cursor.sent > buffer.max_events // 2
        )

    async def catch_up(self, session: Session, timeout_s: float) -> None:
        """Wait until this client is no longer behind on `session`; close it after
        `timeout_s` if it still is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.behind(session):
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
            except TimeoutError:
                self._drop(f"it stayed behind for {timeout_s:g} s")
                return

    def acked(self, session: Session) -> int:
        """The highest seq of `session` this client has acknowledged."""
        cursor = self._cursors.get(session)
        return 0 if cursor is None else cursor.acked

    # -- writing ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a connection-level frame (system.*)."""
        if not self._dropped:
            self._queue.append(frame)
            self._owe(len(frame))

    def _owe(self, size: int) -> bool:
        """Count `size` more bytes owed and wake the writer; False if that was too many."""
        self.pending += size
        if self.pending > 2 * self.send_limit:
            self._drop("it owes twice send_buffer_bytes")
            return False
        self._wake.set()
        return True

    def send_event(self, event: dict[str, Any]) -> None:
        self.send(encode(event))

    def _next_frame(self) -> bytes | None:
        """The next frame owed, fairly across sessions; None when nothing is owed."""
        if self._queue:
            frame = self._queue.popleft()
            self.pending -= len(frame)
            return frame
        cursors = self._cursors
        for session, cursor in cursors.items():
            seq = cursor.sent + 1
            if seq <= session.buffer.last_seq:
                frame = session.buffer.get(seq)
                if frame is None:
                    self._drop(f"event {seq} of {session.id} left the replay buffer unsent")
                    return None
                cursor.sent = seq
                del cursors[session]  # re-insert last: the next frame comes from another session
                cursors[session] = cursor
                if seq > cursor.live_from:
                    self.pending -= len(frame)
                    cursor.owed -= len(frame)
                return frame
        for session in [s for s in cursors if s.closed]:  # ended, and everything sent
            del cursors[session]
        return None

    async def _write(self) -> None:
        ws, wake = self.ws, self._wake
        try:
            while True:
                frame = self._next_frame()
                if frame is None:
                    if self._closing or self._dropped:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                if self.debug:
                    frames_log.debug("%s >> %s", self.id, frame.decode())
                await ws.send_frame(frame, WSMsgType.TEXT)
                self._progress.set()
        except ConnectionError:
            return  # the peer is gone; the reader loop sees the close

    def _drop(self, why: str) -> None:
        """Close a client that cannot keep up; its sessions stay resumable."""
        if self._dropped:
            return
        self._dropped = True
        log.warning("connection %s: closing with %d: %s", self.id, CLOSE_SLOW_CONSUMER, why)
        self.sessions.metrics.slow_client_closed()
        self._queue.clear()
        self.pending = 0
        self._progress.set()  # a turn waiting for this client goes on without it
        self._closer = asyncio.create_task(self._close_slow(), name=f"drop {self.id}")

    async def _close_slow(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        try:
            await asyncio.wait_for(
                self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"too slow: reconnect"), 2.0
            )
        except (TimeoutError, ConnectionError):
            if self._transport is not None:
                self._transport.abort()  # a peer that reads nothing never reads the close

    # -- reading ---------------------------------------------------------------------------

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
                    await self._handle_binary()
        finally:
            self.sessions.detach(self)
            await self.close()

    async def _handle(self, data: str) -> None:
        if self.debug:
            frames_log.debug("%s << %s", self.id, data)
        try:
            try:
                message = self.protocol.decode(data)
            except ProtocolError:
                await self._admit()  # bad frames count too; past the rate, that is the answer
                raise
            if message["event"] != "user.ack":
                await self._admit()
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

    async def _handle_binary(self) -> None:
        try:
            await self._admit()
            raise ProtocolError(
                "unsupported_frame",
                "Binary frames are not supported; send each event as JSON text.",
            )
        except ProtocolError as exc:
            self._reply_error(exc)

    async def _admit(self) -> None:
        """Take one frame's room in the rate limit, or raise rate_limited."""
        if not self._limiter.has_capacity():
            raise ProtocolError(
                "rate_limited",
                f"Too many messages: this server accepts {self._rate_text} per connection; "
                f"wait {self._retry_after_ms} ms and send again.",
                retry_after_ms=self._retry_after_ms,
            )
        await self._limiter.acquire()  # has room, so it does not wait

    def _reply_error(self, exc: ProtocolError) -> None:
        self.sessions.metrics.inbound_error(exc.code)
        self.send_event(exc.to_event())

    # -- handlers: one per client event ------------------------------------------------------

    async def _on_create_session(self, message: dict[str, Any]) -> None:
        await self.sessions.create(requested_agent(message), self)

    async def _on_message(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        self.sessions.start_turn(session, message["content"])

    async def _on_cancel(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        if not self.sessions.cancel_turn(session):
            self._notice("No turn is running in this session; nothing to cancel.", session.id)

    async def _on_end_session(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        await self.sessions.end(session, "ended", "ended by client")

    async def _on_list_agents(self, message: dict[str, Any]) -> None:
        self.send_event(make_event("system.agents", content=self.sessions.registry.describe()))

    async def _on_reconnect(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        last_seq = content.get("last_seq", 0) if isinstance(content, dict) else 0
        self.sessions.reconnect(message["session_id"], self, last_seq)

    async def _on_ack(self, message: dict[str, Any]) -> None:
        content = message["content"]
        session_id = message.get("session_id")
        last_seq = content.get("last_seq")
        event_id = content.get("last_event_id")
        if event_id is not None:  # the schema holds it to "<session_id>:<digits>"
            session_id, _, seq_text = event_id.rpartition(":")
            last_seq = int(seq_text)
        session = self.sessions.sessions.get(session_id) if session_id else None
        cursor = self._cursors.get(session) if session is not None else None
        if cursor is None or not isinstance(last_seq, int):
            return
        cursor.acked = min(max(cursor.acked, last_seq), cursor.sent)
        session.trim_acknowledged()

    async def _on_response(self, message: dict[str, Any]) -> None:
        session = self.sessions.get(message["session_id"], self)
        self._notice(
            f"Nothing in this session is waiting for confirmation of step {message['step_id']!r}.",
            session.id,
        )

    def _notice(self, text: str, session_id: str | None = None) -> None:
        self.send_event(make_event("system.notice", session_id=session_id, content=text))

    # -- closing ---------------------------------------------------------------------------

    async def close(self, code: int = WSCloseCode.OK, timeout_s: float = 5.0) -> None:
        """Write what is owed (bounded by timeout_s), then close the socket."""
        self._closing = True
        self._wake.set()
        self._progress.set()  # turns waiting for this client stop waiting
        writer = self._writer
        if writer is not None and not writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout_s)
            except TimeoutError:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if self._closer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer
        if not self.ws.closed:
            await self.ws.close(code=code)
