"""Sessions: one agent instance each, alive across connections until ended or expired.

`Session.emit` is the one place a session event gets its `seq` and `event_id`, is
encoded (once) and logged, and reaches every attached connection. Nothing here touches a
socket: a connection is anything with `send(frame)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import runner
from .metrics import Metrics
from .protocol import ProtocolError, encode, make_event
from .registry import AgentRegistry
from .settings import Settings
from .store import SessionRecord, Store

log = logging.getLogger(__name__)

EventObserver = Callable[[str, dict[str, Any]], Awaitable[None]]


class Sink(Protocol):
    """The side of a connection that sessions may use."""

    id: str

    def send(self, frame: str) -> None: ...


class Session:
    """One conversation with one agent instance; at most one turn runs at a time."""

    __slots__ = (
        "_manager",
        "agent",
        "agent_name",
        "closed",
        "connections",
        "detached_since",
        "id",
        "seq",
        "turn",
    )

    def __init__(self, session_id: str, agent_name: str, agent: Any, manager: SessionManager):
        self.id = session_id
        self.agent_name = agent_name
        self.agent = agent
        self.seq = 0
        self.connections: set[Sink] = set()
        self.turn: asyncio.Task[None] | None = None
        self.detached_since: float | None = None
        self.closed = False
        self._manager = manager

    @property
    def busy(self) -> bool:
        return self.turn is not None and not self.turn.done()

    async def emit(self, event: dict[str, Any]) -> None:
        """Stamp, encode, log and fan out one session event."""
        self.seq += 1
        event["session_id"] = self.id
        event["seq"] = self.seq
        event["event_id"] = f"{self.id}:{self.seq}"
        frame = encode(event)
        manager = self._manager
        manager.metrics.event_sent(event["event"])
        await manager.store.append_event(self.id, self.seq, frame)
        for connection in tuple(self.connections):
            connection.send(frame)
        if manager.observe is not None:
            await manager.notify(self.id, event)


class SessionManager:
    """Creates, finds, runs, resumes and ends sessions; owns every turn task."""

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
        self.attached: dict[Sink, set[Session]] = {}
        # Set only when a plugin observes events, so an unused hook costs one test per event.
        self.observe: EventObserver | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    async def notify(self, session_id: str, event: dict[str, Any]) -> None:
        """Tell the observer; its failure is logged and never breaks a turn."""
        try:
            await self.observe(session_id, event)
        except Exception:
            log.exception("event observer failed")

    async def create(self, agent_name: str | None, connection: Sink) -> Session:
        spec = self.registry.resolve(agent_name)
        owned = len(self.attached.get(connection, ()))
        if owned >= self.settings.max_sessions_per_connection:
            raise ProtocolError(
                "too_many_sessions",
                f"This connection already has {owned} sessions, the limit; "
                "end one with user.end_session first.",
            )
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
        session = Session(f"s_{secrets.token_hex(8)}", spec.name, agent, self)
        self._attach(session, connection)
        self.sessions[session.id] = session
        await self.store.save_session(SessionRecord(session.id, spec.name, time.time()))
        llm = agent.model.describe() if hasattr(agent.model, "describe") else {}
        await session.emit(
            make_event(
                "agent.session_created",
                content={"session_id": session.id, "agent": spec.name},
                metadata={"agent": spec.name, "llm": llm},
            )
        )
        return session

    def get(self, session_id: str, connection: Sink) -> Session:
        """The session, if this connection is attached to it (others cannot see it)."""
        session = self.sessions.get(session_id)
        if session is None or connection not in session.connections:
            raise ProtocolError(
                "session_not_found",
                f"No session {session_id!r} on this connection; create one with "
                "user.create_session or attach with user.reconnect.",
                session_id=session_id,
            )
        return session

    def start_turn(self, session: Session, text: str) -> None:
        if session.busy:
            raise ProtocolError(
                "session_busy",
                "This session is still answering; wait for its final event or send user.cancel.",
                session_id=session.id,
            )
        session.turn = asyncio.create_task(
            runner.run_turn(session, text, self.settings.turn_timeout_s, self.metrics),
            name=f"turn {session.id}",
        )

    async def cancel_turn(self, session: Session) -> bool:
        """Cancel the running turn and wait for its agent.interrupted; False if none ran."""
        task = session.turn
        if task is None or task.done():
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def reconnect(self, session_id: str, connection: Sink, last_seq: int) -> Session:
        """Attach a connection to a live session: replay what it has not seen, in order,
        then say agent.session_resumed; live events follow without a gap or a repeat."""
        session = self.sessions.get(session_id)
        if session is None:
            raise ProtocolError(
                "session_not_found",
                f"Session {session_id!r} has ended or expired; create a new one.",
                session_id=session_id,
            )
        sent, replayed = last_seq, 0
        for _ in range(8):  # a store that suspends can let a running turn add events
            for seq, frame in await self.store.events_after(session_id, sent):
                connection.send(frame)
                sent, replayed = seq, replayed + 1
            if sent >= session.seq:
                break
        self._attach(session, connection)  # no await since the check: nothing slips between
        await session.emit(
            make_event(
                "agent.session_resumed",
                content={"session_id": session.id, "agent": session.agent_name},
                metadata={"last_seq": last_seq, "replayed": replayed},
            )
        )
        return session

    async def ack(self, session_id: str, connection: Sink, last_seq: int) -> None:
        session = self.sessions.get(session_id)
        if session is not None and connection in session.connections:
            await self.store.trim_events(session_id, last_seq)

    def _attach(self, session: Session, connection: Sink) -> None:
        session.connections.add(connection)
        session.detached_since = None
        self.attached.setdefault(connection, set()).add(session)

    def detach(self, connection: Sink) -> None:
        """A connection went away: its sessions wait for a reconnect until the TTL."""
        now = time.monotonic()
        for session in self.attached.pop(connection, ()):
            session.connections.discard(connection)
            if not session.connections:
                session.detached_since = now

    async def end(self, session: Session, reason: str) -> None:
        """Interrupt its turn, say agent.session_end, and free everything it holds."""
        if session.closed:
            return
        session.closed = True
        await self.cancel_turn(session)
        await session.emit(
            make_event(
                "agent.session_end",
                content=f"Session ended ({reason}).",
                metadata={"reason": reason},
            )
        )
        self.sessions.pop(session.id, None)
        for connection in session.connections:
            self.attached.get(connection, set()).discard(session)
        session.connections.clear()
        session.agent = None
        await self.store.delete_session(session.id)

    async def reap(self) -> int:
        """End sessions left without a connection for longer than the TTL."""
        deadline = time.monotonic() - self.settings.session_ttl_s
        expired = [
            s
            for s in self.sessions.values()
            if s.detached_since is not None and s.detached_since <= deadline and not s.busy
        ]
        for session in expired:
            await self.end(session, "expired")
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
            await self.end(session, "server_shutdown")
