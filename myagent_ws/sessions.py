"""Sessions: one agent instance each, alive across connections until ended or expired.

`Session.emit` is the one place a session event gets its `seq` and `event_id`, is cut to
`max_event_bytes`, encoded (once), buffered and handed to every attached connection, all in
one synchronous step: no await can come between a seq and its delivery, so nothing can
lose a seq or reorder frames. Persistence and plugin observers follow, in order, in the
session's follower task (only when a store keeps events or a plugin observes them).
Nothing here touches a socket: a connection is anything with the `Reader` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .metrics import Metrics
from .protocol import ProtocolError, cut_content, encode, make_event
from .registry import AgentRegistry
from .replay import ReplayBuffer
from .runner import Turn, interrupted_event, start_turn
from .settings import Settings
from .store import SessionRecord, Store

log = logging.getLogger(__name__)

EventObserver = Callable[[str, dict[str, Any]], Awaitable[None]]


class Reader(Protocol):
    """The side of a connection that sessions use: it sends from each attached session's
    buffer at its own cursor."""

    id: str

    def attach(self, session: Session, cursor: int) -> None: ...

    def notify(self, session: Session, frame: bytes) -> bool: ...

    def sent(self, session: Session) -> int: ...

    def behind(self, session: Session) -> bool: ...

    async def catch_up(self, session: Session, timeout_s: float) -> None: ...

    def acked(self, session: Session) -> int: ...


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
        "queue",
        "seq",
        "turn",
    )

    def __init__(self, session_id: str, agent_name: str, agent: Any, manager: SessionManager):
        settings = manager.settings
        self.id = session_id
        self.agent_name = agent_name
        self.agent = agent
        self.seq = 0
        self.buffer = ReplayBuffer(settings.replay_buffer, settings.replay_buffer_bytes)
        self.connections: set[Reader] = set()
        self.turn: Turn | None = None
        # Messages waiting for the running turn (on_busy=queue); made when first needed.
        self.queue: deque[str] | None = None
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
        buffer = self.buffer
        over = buffer.append(frame)
        behind = False
        for connection in self.connections:
            if connection.notify(self, frame):
                behind = True
        if over:  # drop the oldest, but none that an attached reader has yet to send
            buffer.evict(min([seq] + [c.sent(self) + 1 for c in self.connections]))
        manager.metrics.event_sent(event["event"])
        if manager.follows:
            self._follow(seq, frame, event)
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


class SessionManager:
    """Creates, finds, runs, resumes and ends sessions."""

    def __init__(
        self,
        registry: AgentRegistry,
        store: Store,
        settings: Settings,
        model: Any,
        metrics: Metrics,
    ):
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self.settings = settings
        self.model = model
        self.sessions: dict[str, Session] = {}
        # connection -> its sessions, so limits and disconnects never scan every session
        self.attached: dict[Reader, set[Session]] = {}
        # Set only when a plugin observes events, so an unused hook costs nothing per event.
        self.observe: EventObserver | None = None
        # Set when the server starts draining (drain.py): no new sessions or turns.
        self.draining = False

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def follows(self) -> bool:
        """Whether events go anywhere after the wire (a store that keeps them, observers)."""
        return self.store.keeps_events or self.observe is not None

    async def notify(self, session_id: str, event: dict[str, Any]) -> None:
        """Tell the observer; its failure is logged and never breaks a turn."""
        try:
            await self.observe(session_id, event)
        except Exception:
            log.exception("event observer failed")

    async def create(self, agent_name: str | None, connection: Reader) -> Session:
        if self.draining:
            raise ProtocolError(
                "server_draining",
                "This server is shutting down and takes no new sessions; connect again "
                "to reach a server that is up.",
            )
        spec = self.registry.resolve(agent_name)
        self._check_room(connection)
        try:
            agent = spec.factory()
        except Exception as exc:
            log.exception("agent factory for %r failed", spec.name)
            raise ProtocolError(
                "internal_error",
                f"The agent {spec.name!r} could not be created ({type(exc).__name__}); "
                "see the server log.",
            ) from None
        if getattr(agent, "model", None) is None:
            agent.model = self.model
        if getattr(agent, "max_history_turns", 0) is None:
            agent.max_history_turns = self.settings.max_history_turns
        session = Session(f"s_{secrets.token_urlsafe(16)}", spec.name, agent, self)
        self.sessions[session.id] = session
        self._attach(session, connection, 0)
        llm = agent.model.describe() if hasattr(agent.model, "describe") else {}
        session.emit(
            make_event(
                "agent.session_created",
                content={"session_id": session.id, "agent": spec.name},
                metadata={"agent": spec.name, "llm": llm},
            )
        )
        await self.store.save_session(SessionRecord(session.id, spec.name, time.time()))
        return session

    def _check_room(self, connection: Reader) -> None:
        """too_many_sessions past the per-connection or the per-process limit."""
        settings = self.settings
        owned = len(self.attached.get(connection, ()))
        if owned >= settings.max_sessions_per_connection:
            raise ProtocolError(
                "too_many_sessions",
                f"This connection already has {owned} sessions, the limit; "
                "end one with user.end_session first.",
            )
        if len(self.sessions) >= settings.max_sessions:
            raise ProtocolError(
                "too_many_sessions",
                f"This server holds {len(self.sessions)} sessions, its limit; try again later.",
            )

    def get(self, session_id: str, connection: Reader) -> Session:
        """The session, if this connection is attached to it (others cannot see it)."""
        session = self.sessions.get(session_id)
        if session is None or connection not in session.connections:
            raise ProtocolError(
                "session_not_found",
                f"No session {session_id!r} on this connection; create one with "
                "user.create_session or attach with user.reconnect.",
                session_id=session_id,
            )
        session.last_active = time.monotonic()
        return session

    def start_turn(self, session: Session, text: str) -> int:
        """Run a turn for `text` now, or as `on_busy` says while one runs. Returns how
        many messages wait before it (0: it runs now)."""
        if self.draining:
            raise ProtocolError(
                "server_draining",
                "This server is shutting down and starts no new turns; connect again to "
                "reach a server that is up.",
                session_id=session.id,
            )
        if session.busy:
            policy = self.settings.on_busy
            if policy == "queue":
                return self._enqueue(session, text)
            if policy == "reject":
                raise ProtocolError(
                    "session_busy",
                    "This session is still answering; wait for its final event or send "
                    "user.cancel.",
                    session_id=session.id,
                )
            session.turn.cancel()  # interrupt: agent.interrupted, then the new turn
        self._run(session, text)
        return 0

    def _run(self, session: Session, text: str) -> None:
        settings = self.settings
        previous = session.turn.task if session.turn is not None else None
        session.turn = start_turn(
            session.agent,
            text,
            session.emit,
            pace=session.pace,
            timeout_s=settings.turn_timeout_s,
            metrics=self.metrics,
            confirm_timeout_s=settings.confirm_timeout_s,
            on_end=functools.partial(self._next_turn, session),
            after=previous,
            name=f"turn {session.id}",
        )

    def _enqueue(self, session: Session, text: str) -> int:
        queue = session.queue
        if queue is None:
            queue = session.queue = deque()
        limit = self.settings.max_queued_messages
        if len(queue) >= limit:
            raise ProtocolError(
                "session_busy",
                f"This session is still answering and {limit} messages already wait, the "
                "limit; wait for its final event or send user.cancel.",
                session_id=session.id,
            )
        queue.append(text)
        return len(queue)

    def _next_turn(self, session: Session) -> None:
        """A turn ended: the next queued message runs (unless the server is draining)."""
        if not session.queue:
            return
        if self.draining:
            self._stop(session, "the server is shutting down.", "shutdown")
        else:
            self._run(session, session.queue.popleft())

    def _stop(self, session: Session, why: str, reason: str | None = None) -> bool:
        """End the running turn, then every queued message, each with its own
        agent.interrupted, in order. False if there was nothing to stop."""
        queued, session.queue = session.queue or (), None  # so none starts meanwhile
        stopped = session.turn is not None and session.turn.cancel(
            interrupted_event(f"The turn was stopped: {why}", reason=reason) if reason else None
        )
        for _ in queued:
            session.emit(
                interrupted_event(
                    f"This queued message did not run: {why}", queued=True, reason=reason
                )
            )
        return stopped or bool(queued)

    def cancel_turn(self, session: Session) -> bool:
        """End the running turn, and any queued messages, with agent.interrupted now;
        False if nothing was running or waiting."""
        return self._stop(session, "the turn was cancelled.")

    def respond(self, session: Session, step_id: str, approved: bool, feedback: str | None) -> None:
        """Answer the tool call waiting for approval as `step_id`; only the first answer
        counts (a repeat, a late one or a stray one is confirm_not_pending)."""
        if session.turn is None or not session.turn.respond(step_id, approved, feedback):
            raise ProtocolError(
                "confirm_not_pending",
                f"Nothing in this session waits for approval of step {step_id!r}: it was "
                "answered already, timed out, or its turn ended.",
                session_id=session.id,
            )

    def reconnect(self, session_id: str, connection: Reader, last_seq: int) -> Session:
        """Attach a connection to a live session from `last_seq`: it is sent every buffered
        event after that, in order, then agent.session_resumed, then live events. Events
        after `last_seq` that are no longer buffered are named in metadata.replay_gap."""
        session = self.sessions.get(session_id)
        if session is None:
            raise ProtocolError(
                "session_not_found",
                f"Session {session_id!r} has ended or expired; create a new one.",
                session_id=session_id,
            )
        if connection not in session.connections:
            self._check_room(connection)
        buffer = session.buffer
        last_seq = min(max(last_seq, 0), session.seq)
        cursor = max(last_seq, buffer.first_seq - 1)
        pending = session.turn.pending if session.turn is not None else None
        metadata: dict[str, Any] = {
            "last_seq": last_seq,
            "replayed": session.seq - cursor,
            "pending_confirm": [pending.step_id] if pending is not None else [],
        }
        if cursor > last_seq:
            metadata["replay_gap"] = {"from": last_seq + 1, "to": cursor}
        self._attach(session, connection, cursor)
        session.last_active = time.monotonic()
        session.emit(
            make_event(
                "agent.session_resumed",
                content={"session_id": session.id, "agent": session.agent_name},
                metadata=metadata,
            )
        )
        if pending is not None:  # asked again, even if the first ask was acked away
            session.emit(pending.event())
        return session

    def _attach(self, session: Session, connection: Reader, cursor: int) -> None:
        session.connections.add(connection)
        session.detached_since = None
        self.attached.setdefault(connection, set()).add(session)
        connection.attach(session, cursor)

    def detach(self, connection: Reader) -> None:
        """A connection went away: its sessions wait for a reconnect until the TTL."""
        now = time.monotonic()
        for session in self.attached.pop(connection, ()):
            session.connections.discard(connection)
            if not session.connections:
                session.detached_since = now

    async def end(self, session: Session, reason: str, detail: str = "") -> None:
        """Interrupt its turn, say agent.session_end, and free everything it holds. The
        attached connections still send what they have not sent of it."""
        if session.closed:
            return
        session.closed = True
        self._stop(session, f"the session ended ({detail or reason}).", reason)
        session.emit(
            make_event(
                "agent.session_end",
                content=f"Session ended ({detail or reason}).",
                metadata={"reason": reason},
            )
        )
        self.sessions.pop(session.id, None)
        for connection in session.connections:
            self.attached.get(connection, set()).discard(session)
        session.agent = None
        await session.drain()
        await self.store.delete_session(session.id)

    async def reap(self) -> int:
        """End sessions left without a connection for session_ttl_s, and attached ones
        with no message for session_idle_ttl_s."""
        now = time.monotonic()
        detached_before = now - self.settings.session_ttl_s
        idle_before = now - self.settings.session_idle_ttl_s
        expired = []
        for s in self.sessions.values():
            if s.busy:
                continue
            if s.detached_since is not None and s.detached_since <= detached_before:
                expired.append((s, f"no connection for {self.settings.session_ttl_s:g} s"))
            elif s.connections and s.last_active <= idle_before:
                expired.append((s, f"idle for {self.settings.session_idle_ttl_s:g} s"))
        for session, detail in expired:
            await self.end(session, "expired", detail)
        return len(expired)

    async def run_reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval_s)
            try:
                await self.reap()
            except Exception:
                log.exception("session reaper failed")

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await self.end(session, "shutdown", "server shutdown")
