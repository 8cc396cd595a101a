"""One session: one agent instance, its event numbering and its turns.

`Session.emit` is the one place a session event gets its `seq` and `event_id`, is cut to
`max_event_bytes`, encoded (once), buffered and handed to every attached connection, all in
one synchronous step: no await can come between a seq and its delivery, so nothing can
lose a seq or reorder frames. Persistence and plugin observers follow, in order, in the
session's follower task (only when a store keeps events or a plugin observes them).

At most one turn runs at a time; a message that arrives meanwhile is refused, queued or
interrupts the running turn, as `on_busy` says, and each still ends with exactly one
terminal event. Nothing here touches a socket: a connection is anything with the
`Reader` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from .protocol import ProtocolError, cut_content, encode
from .replay import ReplayBuffer
from .runner import (
    Emit,
    OnEnd,
    PendingConfirm,
    Questions,
    Turn,
    interrupted_event,
    start_turn,
)

if TYPE_CHECKING:
    from .sessions import SessionManager

log = logging.getLogger(__name__)


class Reader(Protocol):
    """The side of a connection that sessions use: it sends from each attached session's
    buffer at its own cursor."""

    id: str
    principal: str | None  # who authenticated (None: auth is off)

    def attach(self, session: Session, cursor: int) -> None: ...

    def notify(self, session: Session, frame: bytes) -> bool: ...

    def sent(self, session: Session) -> int: ...

    def behind(self, session: Session) -> bool: ...

    async def catch_up(self, session: Session, timeout_s: float) -> None: ...

    def acked(self, session: Session) -> int: ...


# Message ids a session remembers to spot a resend: a client resends only its latest.
RECENT_IDS = 8


class Session:
    """One conversation with one agent instance; at most one turn runs at a time."""

    __slots__ = (
        "_backlog",
        "_follower",
        "_manager",
        "agent",
        "agent_name",
        "buffer",
        "closed",
        "connections",
        "detached_since",
        "id",
        "last_active",
        "owner",
        "queue",
        "recent_ids",
        "seq",
        "turn",
    )

    def __init__(
        self,
        session_id: str,
        agent_name: str,
        agent: Any,
        manager: SessionManager,
        owner: str | None = None,
    ):
        settings = manager.settings
        self.id = session_id
        self.agent_name = agent_name
        self.agent = agent
        # The principal that created it; only it may use the session (None: auth is off).
        self.owner = owner
        self.seq = 0
        self.buffer = ReplayBuffer(settings.replay_buffer, settings.replay_buffer_bytes)
        self.connections: set[Reader] = set()
        self.turn: Turn | None = None
        # Messages waiting for the running turn (on_busy=queue); made when first needed.
        self.queue: deque[str] | None = None
        # The last RECENT_IDS message ids clients gave; made when first needed.
        self.recent_ids: deque[str] | None = None
        self.detached_since: float | None = None
        self.last_active = time.monotonic()
        self.closed = False
        self._manager = manager
        # For the store and observers; made when first needed (most servers have neither).
        self._backlog: deque[tuple[int, bytes, dict[str, Any]]] | None = None
        self._follower: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.turn is not None and self.turn.open

    def emit(self, event: dict[str, Any]) -> bool:
        """Stamp, cut, encode, buffer and hand out one session event, without awaiting.
        True when an attached connection fell behind: the producer should `pace()`."""
        manager = self._manager
        self.seq = seq = self.seq + 1
        event["session_id"] = self.id
        event["seq"] = seq
        event["event_id"] = f"{self.id}:{seq}"
        content = event.get("content")
        limit = manager.settings.max_event_bytes
        if type(content) is str and len(content) * 4 > limit:
            cut_content(event, content, limit)
        frame = encode(event)
        behind = self._deliver(seq, frame)
        manager.metrics.event_sent(event["event"])
        if manager.follows:
            self._follow(seq, frame, event)
        return behind

    def _deliver(self, seq: int, frame: bytes) -> bool:
        """Buffer the frame of `seq` (the next one) and hand it to every attached
        connection; True when one fell behind."""
        buffer = self.buffer
        over = buffer.append(frame)
        behind = False
        for connection in self.connections:
            if connection.notify(self, frame):
                behind = True
        if over:  # drop the oldest, but none that an attached reader has yet to send
            buffer.evict(min([seq] + [c.sent(self) + 1 for c in self.connections]))
        return behind

    async def pace(self) -> None:
        """Wait for attached connections that fell behind; one still behind after
        send_timeout_s is closed (4008) and the turn goes on without it."""
        timeout_s = self._manager.settings.send_timeout_s
        for connection in [c for c in self.connections if c.behind(self)]:
            await connection.catch_up(self, timeout_s)

    def _follow(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        """Queue the event for the store and the observers, which take it in order."""
        backlog = self._backlog
        if backlog is None:
            backlog = self._backlog = deque()
        if len(backlog) >= self.buffer.max_events:
            if self._manager.store.keeps_events:
                self._store_failed(RuntimeError("the store fell a whole replay buffer behind"))
                return
            log.warning("session %s: event observers fell behind; skipping one", self.id)
            backlog.popleft()
        backlog.append((seq, frame, event))
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._run_follower(), name=f"follow {self.id}")

    async def _run_follower(self) -> None:
        manager = self._manager
        backlog = self._backlog
        while backlog:
            batch = list(backlog)
            backlog.clear()
            if manager.store.keeps_events:
                try:
                    await manager.store.append_events(self.id, [(s, f) for s, f, _ in batch])
                except Exception as exc:
                    self._store_failed(exc)
                    return
            if manager.observe is not None:
                for _, _, event in batch:
                    await manager.notify(self.id, event)

    def _store_failed(self, exc: BaseException) -> None:
        """A store failure ends the running turn with agent.error; the session stays."""
        log.error("session %s: the store failed: %r", self.id, exc)
        self._manager.metrics.store_error()
        if self._backlog is not None:
            self._backlog.clear()
        if self.turn is not None:
            self.turn.fail(
                "internal_error",
                "The session store failed, so this turn was stopped; see the server log.",
            )

    def trim_acknowledged(self) -> None:
        """Drop what every attached connection has acknowledged; one connection's ack
        never drops what another has not seen."""
        if self.connections:
            self.buffer.trim(min(c.acked(self) for c in self.connections))

    async def drain(self) -> None:
        """Wait until the store and observers have taken every event so far."""
        if self._follower is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    # -- turns ---------------------------------------------------------------------------

    @property
    def pending(self) -> PendingConfirm | None:
        """The tool call waiting for approval, if any."""
        return self.turn.pending if self.turn is not None else None

    async def repeated(self, message_id: str) -> bool:
        """Whether a user.message with this `metadata.message_id` came before: a client
        that lost its link sends its message again, not knowing if it arrived."""
        recent = self.recent_ids
        if recent is None:
            recent = self.recent_ids = deque(maxlen=RECENT_IDS)
        if message_id in recent:
            return True
        recent.append(message_id)
        return False

    async def forget(self, message_id: str) -> None:
        """A message with this id was refused: its resend is a new try."""
        if self.recent_ids is not None and message_id in self.recent_ids:
            self.recent_ids.remove(message_id)

    async def start_turn(self, text: str) -> int:
        """Run a turn for `text` now, or as `on_busy` says while one runs. Returns how
        many messages wait before it (0: it runs now)."""
        self._manager.refuse_if_draining(self.id)
        if self.busy:
            policy = self._manager.settings.on_busy
            if policy == "queue":
                return self._enqueue(text)
            if policy == "reject":
                raise self.busy_error()
            self.turn.cancel()  # interrupt: agent.interrupted, then the new turn
        self._run(text)
        return 0

    def _run(self, text: str) -> None:
        self._start(text, self.emit, self._next_turn)

    def _start(
        self, text: str, emit: Emit, on_end: OnEnd, questions: Questions | None = None
    ) -> None:
        """Start the turn, after the previous one's task (it may still be unwinding)."""
        settings = self._manager.settings
        previous = self.turn.task if self.turn is not None else None
        self.turn = start_turn(
            self.agent,
            text,
            emit,
            pace=self.pace,
            timeout_s=settings.turn_timeout_s,
            metrics=self._manager.metrics,
            confirm_timeout_s=settings.confirm_timeout_s,
            on_end=on_end,
            after=previous,
            questions=questions,
            name=f"turn {self.id}",
            reveal_detail=settings.debug,  # error detail on the wire only with --debug
        )

    def _enqueue(self, text: str) -> int:
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        limit = self._manager.settings.max_queued_messages
        if len(queue) >= limit:
            raise self.busy_error(queue_full=True)
        queue.append(text)
        return len(queue)

    def busy_error(self, queue_full: bool = False) -> ProtocolError:
        if queue_full:
            limit = self._manager.settings.max_queued_messages
            text = (
                f"This session is still answering and {limit} messages already wait, the "
                "limit; wait for its final event or send user.cancel."
            )
        else:
            text = "This session is still answering; wait for its final event or send user.cancel."
        return ProtocolError("session_busy", text, session_id=self.id)

    def _next_turn(self, terminal: dict[str, Any]) -> None:
        """A turn ended: the next queued message runs (unless the server is draining)."""
        if not self.queue:
            return
        if self._manager.draining:
            self.stop("the server is shutting down.", "shutdown")
        else:
            self._run(self.queue.popleft())

    async def cancel(self, why: str, reason: str | None = None) -> bool:
        """`stop`, from a client or the manager (a shared session may have to ask
        another process)."""
        return self.stop(why, reason)

    def stop(self, why: str, reason: str | None = None) -> bool:
        """End the running turn, then every queued message, each with its own
        agent.interrupted, in order. False if there was nothing to stop."""
        queued, self.queue = self.queue or (), None  # so none starts meanwhile
        stopped = self.turn is not None and self.turn.cancel(
            interrupted_event(f"The turn was stopped: {why}", reason=reason) if reason else None
        )
        for _ in queued:
            self.emit(
                interrupted_event(
                    f"This queued message did not run: {why}", queued=True, reason=reason
                )
            )
        return stopped or bool(queued)

    async def respond(self, step_id: str, approved: bool, feedback: str | None) -> None:
        """Answer the tool call waiting for approval as `step_id`; only the first answer
        counts (a repeat, a late one or a stray one is confirm_not_pending)."""
        if self.turn is None or not self.turn.respond(step_id, approved, feedback):
            raise self.not_pending(step_id)

    def not_pending(self, step_id: str) -> ProtocolError:
        return ProtocolError(
            "confirm_not_pending",
            f"Nothing in this session waits for approval of step {step_id!r}: it was "
            "answered already, timed out, or its turn ended.",
            session_id=self.id,
            step_id=step_id,
        )
