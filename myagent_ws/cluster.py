"""The session manager of a cluster: sessions live in the Redis store, and this process
holds a `SharedSession` (shared_session.py) for each session it serves a connection or a
turn of. Creating, reconnecting (replay from the session's log), ending and expiring work
from any process; one that stops takes its turns with it, not its sessions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import orjson

from .protocol import make_event
from .redis_store import RedisStore
from .session import Reader, Session
from .sessions import (
    SessionManager,
    check_owner,
    created_event,
    end_event,
    new_session_id,
    not_found,
)
from .shared_session import SharedSession
from .store import SessionRecord, StoreUnavailable

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)


class SharedSessions(SessionManager):
    """The session manager over the Redis store: sessions live in Redis, and this
    process holds a SharedSession for those it serves a connection or a turn of."""

    store: RedisStore
    node: Node
    _touched_at = 0.0  # when the keys of the sessions served here were last kept alive

    @property
    def ready(self) -> bool:
        return self.node.healthy

    @property
    def node_id(self) -> str:
        return self.node.id

    async def create(self, agent_name: str | None, connection: Reader) -> Session:
        self.refuse_if_draining()
        spec = self.registry.resolve(agent_name)
        self._check_room(connection)
        owner = connection.principal
        agent = self.new_agent(spec.name)
        session = SharedSession(new_session_id(), spec.name, agent, self, owner)
        session.mem_v = 0
        event = created_event(session, self.settings.debug)
        body = session.body(event)
        record = SessionRecord(session.id, spec.name, time.time(), owner)
        first = await self.store.create(record, event["event"], body)
        self.sessions[session.id] = session
        self._attach(session, connection, 0)
        self._follow(session)
        await session.stored(first, [(event["event"], body, event, None)])
        return session

    def _follow(self, session: SharedSession) -> None:
        if not session.tailing:
            session.tailing = True
            self.node.follow()

    def follow(self, session: Session, connection: Reader, cursor: int) -> None:
        """As SessionManager.follow; a session left untailed gets its log read again."""
        super().follow(session, connection, cursor)
        self._follow(session)

    async def reconnect(self, session_id: str, connection: Reader, last_seq: int) -> Session:
        """As SessionManager.reconnect, from the session's log in Redis. One await (the
        snapshot); everything after it is one synchronous step, so another reconnect or
        detach of the same session meanwhile cannot leave this one half set up."""
        found = await self.store.snapshot(session_id, max(last_seq, 0), self.settings.replay_buffer)
        if found is None:
            raise not_found(session_id)
        check_owner(found.owner, connection.principal, session_id)
        session = self.sessions.get(session_id)
        if session is None:
            session = SharedSession(session_id, found.agent, None, self, found.owner)
            self.sessions[session_id] = session
        self._room_for(session, connection)
        if not session.tailing:
            start = found.frames[0][0] if found.frames else found.seq + 1
            session.buffer.restart(start)
            session.seq = start - 1
            self._follow(session)
        for seq, frame in found.frames:  # those here already are skipped
            session.take(seq, frame, from_log=True)
        question = found.question
        self._resume(session, connection, last_seq, question[0] if question else None)
        if question is not None:  # asked again, only while it still waits
            step_id, body = question
            event = orjson.loads(body)
            event["timestamp"] = make_event("agent.user_confirm")["timestamp"]
            session._put(event, ("pending", step_id))
        return session

    async def adopt(self, session_id: str, text: str, token: str) -> None:
        """Run a queued message of a session whose process was lost, as turn `token`
        (the store gave this process the turn already)."""
        session = self.sessions.get(session_id)
        if session is None:
            record = await self.store.load_session(session_id)
            if record is None:
                return
            session = SharedSession(session_id, record.agent, None, self, record.owner)
            self.sessions[session_id] = session
        if session.agent is None:
            session.agent = self.new_agent(session.agent_name)
        session.load_memory(*await self.store.memory(session_id, session.mem_v))
        session._run(text, token)

    def detach(self, connection: Reader) -> None:
        for session in self.attached.pop(connection, ()):
            session.connections.discard(connection)
            if not session.connections:
                session.tailing = False
                self.release_if_idle(session)

    def release_if_idle(self, session: SharedSession) -> None:
        """Forget a session this process neither serves a connection of nor runs a turn
        of: Redis holds it (the next process to need it loads it)."""
        if session.connections or session.busy or session._outbox:
            return
        session.tailing = False
        session.buffer.restart(1)
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    def vanished(self, session: SharedSession) -> None:
        """The session is not in Redis any more (expired, or Redis lost its data)."""
        if session.closed:
            return
        log.warning("session %s: gone from the store", session.id)
        session.tell(
            not_found(
                session.id,
                f"Session {session.id!r} is no longer in the session store (it expired, or "
                "Redis lost its data); its turn was stopped. Create a new session.",
            )
        )
        self.ended_elsewhere(session)

    def ended_elsewhere(self, session: SharedSession) -> None:
        """agent.session_end came from the log (or the session vanished): let go."""
        session.closed = True
        if session.turn is not None:
            session.turn.abandon()
        self.sessions.pop(session.id, None)
        for connection in session.connections:
            self.attached.get(connection, set()).discard(session)
        session.agent = None

    async def end(self, session: Session, reason: str, detail: str = "") -> None:
        if session.closed or session.ending:
            return
        session.ending = True
        detail = detail or reason
        await session.cancel(f"the session ended ({detail}).", reason)
        session.emit(end_event(reason, detail))
        await session.drain()
        self.ended_elsewhere(session)

    async def reap(self) -> int:
        """Keep the keys of the sessions served here alive, and end those idle for
        session_idle_ttl_s everywhere. (A session no process serves expires in Redis
        session_ttl_s after its last use.)"""
        served = list(self.sessions.values())
        if not served:
            return 0
        now = time.monotonic()
        if now - self._touched_at >= self.settings.session_ttl_s / 4:  # each use touches too
            await self.store.touch([s.id for s in served])
            self._touched_at = now
        idle_before = time.time() - self.settings.session_idle_ttl_s
        candidates = [
            s
            for s in served
            if s.connections
            and not s.busy
            and s.last_active <= now - self.settings.session_idle_ttl_s
        ]
        if not candidates:
            return 0
        seen = await self.store.seen([s.id for s in candidates])
        expired = [
            s for s, t in zip(candidates, seen, strict=True) if t is None or t <= idle_before
        ]
        for session in expired:
            idle = f"idle for {self.settings.session_idle_ttl_s:g} s"
            await self.end(session, "expired", idle)
        return len(expired)

    async def shutdown(self) -> None:
        """This process stops; the sessions go on elsewhere. Its running turns end with
        agent.interrupted (reason shutdown); its connections are closed after this."""
        for session in [s for s in self.sessions.values() if s.busy]:
            with contextlib.suppress(StoreUnavailable):
                await session.cancel("the server is shutting down.", "shutdown")
        for session in list(self.sessions.values()):
            await session.drain()
