"""The sending half of a connection: what it owes, and getting it onto the socket.

Frames come from two places: a small queue of connection-level frames (system.*), and
each attached session's replay buffer at this connection's own cursor. So a replay is a
cursor set back, paced by the socket like any other send; live events can never overtake
replayed ones; and a slow client holds no copy of anything.

A live event whose connection owes nothing else goes straight to the socket, in the
producer's own step: waking a writer task for it would cost a loop iteration of latency
(tens of milliseconds under load) and a task switch per event. Anything else (a replay,
a backlog, a socket with more than `DIRECT_WRITE_LIMIT` unsent) starts a writer task,
which sends in order, waits for the socket to drain, and ends when nothing is owed: an
idle connection holds no task.

A connection that falls behind (owing more than `send_buffer_bytes`, or half of a
session's replay buffer) makes that session's turn wait for it: a client that keeps
reading is never cut off. One that stays behind for `send_timeout_s`, owes twice the
bound, or would miss an event that left the replay buffer is closed with code 4008; its
sessions wait for a `user.reconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import struct
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from .protocol import encode

if TYPE_CHECKING:
    from .metrics import Metrics
    from .session import Session

log = logging.getLogger("myagent_ws.connection")
frames_log = logging.getLogger("myagent_ws.frames")


def broadcast(readers: Iterable[Outbound], event: dict) -> None:
    """One connection-level event (no session, no seq) to every reader: encoded once."""
    frame = encode(event)
    for reader in tuple(readers):
        reader.send(frame)


# Close code for a client that fell more than send_buffer_bytes behind (or behind the
# replay buffer): its sessions live on, and user.reconnect with last_seq resumes them.
CLOSE_SLOW_CONSUMER = 4008
# Past this many bytes waiting in the socket's buffer, frames go through the writer task,
# which waits for the socket to drain.
DIRECT_WRITE_LIMIT = 16 * 1024

_HEADER_SHORT = struct.Struct("!BB").pack
_HEADER_MEDIUM = struct.Struct("!BBH").pack
_HEADER_LONG = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed WebSocket text frame (RFC 6455 section 5.2), as a
    server sends it."""
    size = len(payload)
    if size < 126:
        return _HEADER_SHORT(0x81, size) + payload
    if size < 65536:
        return _HEADER_MEDIUM(0x81, 126, size) + payload
    return _HEADER_LONG(0x81, 127, size) + payload


# Reader ids are unique across processes: an agent.session_resumed names the reader that
# reconnected, and on Redis it reaches the session's readers in every process.
_PROCESS = secrets.token_hex(3)
_reader_ids = itertools.count(1)


def new_reader_id(kind: str) -> str:
    """`<kind>_<6 hex of this process>_<n>`: "c" for connections, "agui" for AG-UI runs."""
    return f"{kind}_{_PROCESS}_{next(_reader_ids)}"


class Cursor:
    """Where one reader is in one session's buffer."""

    __slots__ = ("acked", "live_from", "owed", "sent")

    def __init__(self, sent: int, live_from: int) -> None:
        self.sent = sent  # the last seq handed to the socket
        self.live_from = live_from  # seqs after this are live: counted in `pending`
        self.owed = 0  # of `pending`, the bytes of this session
        self.acked = sent  # the highest seq the client acknowledged


class Paced:
    """How a reader that follows sessions at its own cursors paces their turns: this
    connection, and the AG-UI readers (agui.Tail). A turn waits while the reader owes more
    than `send_limit` bytes, or half of the session's replay buffer in events or in bytes;
    after `send_timeout_s` the reader is dropped and the turn goes on. One implementation
    for both, inherited rather than called: `behind` runs for every event a backlogged
    connection owes, so it costs no extra call."""

    pending: int  # bytes owed, across sessions
    send_limit: float
    _cursors: dict[Session, Cursor]
    _dropped: bool  # too slow: no longer paces anything
    _closing: bool
    _progress: asyncio.Event | None  # set when the reader took something, or was dropped

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
        if self._progress is None:
            self._progress = asyncio.Event()
        while self.behind(session):
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
            except TimeoutError:
                self._drop(f"it stayed behind for {timeout_s:g} s")
                return

    def _drop(self, why: str) -> None:
        """Stop following: this reader could not keep up."""
        raise NotImplementedError


class Outbound(Paced):
    """Sends a connection's frames in order; what sessions call (the Reader protocol)."""

    def __init__(
        self,
        id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        send_limit: int,
        metrics: Metrics,
        debug: bool,
    ) -> None:
        self.id = id
        self.ws = ws
        self.send_limit = send_limit
        self.debug = debug
        self._metrics = metrics
        # Bytes owed and not yet written: queued frames, plus live events of attached
        # sessions (a replay owes nothing new: those frames are in the buffer already).
        self.pending = 0
        self._queue: deque[bytes] | None = None  # made when first needed
        self._cursors: dict[Session, Cursor] = {}
        self._transport = transport
        # Frames may go straight out whenever no writer runs (then nothing is owed): only
        # without permessage-deflate (the frame is written as it is), with a transport,
        # and until the connection closes.
        self._direct = transport is not None and not ws.compress
        self._writer: asyncio.Task[None] | None = None
        self._progress: asyncio.Event | None = None  # made when a turn waits for this client
        self._closing = False  # write what is owed, then stop
        self._dropped = False  # too slow: stop at once
        self._closer: asyncio.Task[None] | None = None

    # -- what sessions call ----------------------------------------------------------------

    def attach(self, session: Session, cursor: int) -> None:
        """Send `session` from the event after `cursor` on."""
        previous = self._cursors.get(session)
        if previous is not None:
            self.pending -= previous.owed
        self._cursors[session] = Cursor(cursor, session.buffer.last_seq)
        self._kick()

    def notify(self, session: Session, frame: bytes) -> bool:
        """`frame`, the newest event of `session`, is in its buffer; True if this
        connection is now behind, so the producer should wait for it."""
        if self._dropped:
            return False
        cursor = self._cursors[session]
        if (
            self._writer is None
            and self._direct
            and cursor.sent + 1 == session.seq
            and self._write_now(frame)
        ):
            cursor.sent += 1
            return False
        size = len(frame)
        cursor.owed += size
        return self._owe(size) and self.behind(session)

    def sent(self, session: Session) -> int:
        """The last seq of `session` handed to the socket (all of it, once dropped)."""
        cursor = self._cursors.get(session)
        return session.seq if cursor is None or self._dropped else cursor.sent

    def acknowledge(self, session: Session, last_seq: int) -> bool:
        """The client has `session` up to `last_seq` (never past what was sent to it);
        False if this connection is not attached to it."""
        cursor = self._cursors.get(session)
        if cursor is None:
            return False
        cursor.acked = min(max(cursor.acked, last_seq), cursor.sent)
        return True

    def acked(self, session: Session) -> int:
        """The highest seq of `session` this client has acknowledged."""
        cursor = self._cursors.get(session)
        return 0 if cursor is None else cursor.acked

    # -- writing ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Send a connection-level frame (system.*), now or after what is owed."""
        if self._dropped or (self._writer is None and self._direct and self._write_now(frame)):
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(frame)
        self._owe(len(frame))

    def _write_now(self, frame: bytes) -> bool:
        """Hand `frame` to the socket at once; False if the socket is closing or already
        holds DIRECT_WRITE_LIMIT unsent bytes (then the writer waits for it to drain)."""
        transport = self._transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT
            or self.ws.closed
        ):
            return False
        if self.debug:
            frames_log.debug("%s >> %s", self.id, frame.decode())
        transport.write(text_frame(frame))
        return True

    def _owe(self, size: int) -> bool:
        """Count `size` more bytes owed and start the writer; False if that was too many."""
        self.pending += size
        if self.pending > 2 * self.send_limit:
            self._drop("it owes twice send_buffer_bytes")
            return False
        self._kick()
        return True

    def _kick(self) -> None:
        """Make sure a writer runs; until it ends, frames queue behind what it owes."""
        if self._writer is None and not self._dropped:
            self._writer = asyncio.create_task(self._write())

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
        """Send what is owed, in order, then end (no awaiting between the last check and
        the end, so nothing owed can be missed)."""
        ws = self.ws
        try:
            while (frame := self._next_frame()) is not None:
                if self.debug:
                    frames_log.debug("%s >> %s", self.id, frame.decode())
                await ws.send_frame(frame, WSMsgType.TEXT)
                if self._progress is not None:
                    self._progress.set()
        except ConnectionError:
            return  # the peer is gone; the reader loop sees the close
        finally:
            self._writer = None

    def _drop(self, why: str) -> None:
        """Close a client that cannot keep up; its sessions stay resumable."""
        if self._dropped:
            return
        self._dropped = True
        self._direct = False
        log.warning("connection %s: closing with %d: %s", self.id, CLOSE_SLOW_CONSUMER, why)
        self._metrics.slow_client_closed()
        self._queue = None
        self.pending = 0
        if self._progress is not None:
            self._progress.set()  # a turn waiting for this client goes on without it
        self._closer = asyncio.create_task(self._close_slow(), name=f"drop {self.id}")

    async def _close_slow(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        try:
            await asyncio.wait_for(
                self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"too slow: reconnect"), 2.0
            )
        except (TimeoutError, ConnectionError):
            if self._transport is not None:
                self._transport.abort()  # a peer that reads nothing never reads the close

    async def close(self, code: int = WSCloseCode.OK, timeout_s: float = 5.0) -> None:
        """Write what is owed (bounded by timeout_s), then close the socket."""
        self._closing = True
        self._direct = False
        if self._progress is not None:
            self._progress.set()  # turns waiting for this client stop waiting
        writer = self._writer
        if writer is not None:
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
