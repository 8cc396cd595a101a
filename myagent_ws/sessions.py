"""The session manager: creates, finds, attaches, resumes, ends and expires sessions,
and holds the limits that span them (per connection, per process)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .metrics import Metrics
from .protocol import ProtocolError, make_event
from .registry import AgentRegistry
from .session import Reader, Session
from .settings import Settings
from .store import SessionRecord, Store

log = logging.getLogger(__name__)

EventObserver = Callable[[str, dict[str, Any]], Awaitable[None]]


NODE_ID = f"{socket.gethostname()}-{os.getpid()}"


def new_session_id() -> str:
    """128 random bits: the id is all a client needs to resume a session."""
    return f"s_{secrets.token_urlsafe(16)}"


# What agent.session_created says of a model without --debug (describe() may name more:
# the endpoint's URL is an internal host).
PUBLIC_LLM_FIELDS = ("provider", "model", "offline")


def created_event(session: Session, debug: bool = False) -> dict[str, Any]:
    """agent.session_created, naming the agent and its model."""
    model = session.agent.model
    llm = model.describe() if hasattr(model, "describe") else {}
    if not debug:
        llm = {key: llm[key] for key in PUBLIC_LLM_FIELDS if key in llm}
    return make_event(
        "agent.session_created",
        content={"session_id": session.id, "agent": session.agent_name},
        metadata={"agent": session.agent_name, "llm": llm},
    )


def resumed_event(session: Session, metadata: dict[str, Any]) -> dict[str, Any]:
    return make_event(
        "agent.session_resumed",
        content={"session_id": session.id, "agent": session.agent_name},
        metadata=metadata,
    )


def end_event(reason: str, detail: str) -> dict[str, Any]:
    return make_event(
        "agent.session_end", content=f"Session ended ({detail}).", metadata={"reason": reason}
    )


def not_found(session_id: str, message: str | None = None) -> ProtocolError:
    return ProtocolError(
        "session_not_found",
        message or f"Session {session_id!r} has ended or expired; create a new one.",
        session_id=session_id,
    )


def check_owner(owner: str | None, principal: str | None, session_id: str) -> None:
    """forbidden, unless the session is this principal's (with auth off, both are None)."""
    if owner != principal:
        raise forbidden(session_id)


def forbidden(session_id: str) -> ProtocolError:
    """Another principal's session: said as such (the connection stays)."""
    return ProtocolError(
        "forbidden",
        "That session belongs to another principal; use a session your credential "
        "created, or create one with user.create_session.",
        session_id=session_id,
    )


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

    def refuse_if_draining(self, session_id: str | None = None) -> None:
        """server_draining for new sessions and turns once a drain has begun."""
        if self.draining:
            raise ProtocolError(
                "server_draining",
                "This server is shutting down and takes no new sessions or turns; connect "
                "again to reach a server that is up.",
                session_id=session_id,
            )

    async def create(self, agent_name: str | None, connection: Reader) -> Session:
        self.refuse_if_draining()
        spec = self.registry.resolve(agent_name)
        self._check_room(connection)
        owner = connection.principal
        session = Session(new_session_id(), spec.name, self.new_agent(spec.name), self, owner)
        self.sessions[session.id] = session
        self._attach(session, connection, 0)
        session.emit(created_event(session, self.settings.debug))
        await self.store.save_session(SessionRecord(session.id, spec.name, time.time(), owner))
        return session

    def new_agent(self, name: str) -> Any:
        """A new instance of the agent `name`, with the server's model and history limit
        where it brings none."""
        spec = self.registry.resolve(name)
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
        return agent

    @property
    def node_id(self) -> str:
        """Which server process this is, e.g. behind a load balancer."""
        return NODE_ID

    @property
    def ready(self) -> bool:
        """Whether this process can serve sessions (a shared store may be out of reach)."""
        return True

    def _room_for(self, session: Session, connection: Reader) -> None:
        """A connection that attaches to one more session needs room for it."""
        if connection not in session.connections:
            self._check_room(connection)

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

    async def belongs_to_another(self, session_id: str, connection: Reader) -> bool:
        """Whether the session is another principal's (with auth on; the failure path of
        a frame naming a session this connection is not attached to)."""
        if connection.principal is None:
            return False
        session = self.sessions.get(session_id)
        if session is not None:
            owner = session.owner
        else:  # served by another process, or gone
            record = await self.store.load_session(session_id)
            owner = record.owner if record is not None else None
        return owner is not None and owner != connection.principal

    async def reconnect(self, session_id: str, connection: Reader, last_seq: int) -> Session:
        """Attach a connection to a live session from `last_seq`: it is sent every buffered
        event after that, in order, then agent.session_resumed, then live events. Events
        after `last_seq` that are no longer buffered are named in metadata.replay_gap."""
        session = self.sessions.get(session_id)
        if session is None:
            raise not_found(session_id)
        check_owner(session.owner, connection.principal, session_id)
        self._room_for(session, connection)
        pending = session.pending
        self._resume(session, connection, last_seq, pending.step_id if pending else None)
        if pending is not None:  # asked again, even if the first ask was acked away
            session.emit(pending.event())
        return session

    def _resume(
        self, session: Session, connection: Reader, last_seq: int, pending_step: str | None
    ) -> None:
        """Attach `connection` to send from `last_seq` on (or from the oldest buffered
        event, naming the gap), then agent.session_resumed."""
        last_seq = min(max(last_seq, 0), session.seq)
        cursor = max(last_seq, session.buffer.first_seq - 1)
        metadata: dict[str, Any] = {
            "last_seq": last_seq,
            "replayed": session.seq - cursor,
            "pending_confirm": [pending_step] if pending_step is not None else [],
        }
        metadata["connection_id"] = connection.id  # several tabs may watch one session
        if cursor > last_seq:
            metadata["replay_gap"] = {"from": last_seq + 1, "to": cursor}
        self._attach(session, connection, cursor)
        session.last_active = time.monotonic()
        session.emit(resumed_event(session, metadata))

    def follow(self, session: Session, connection: Reader, cursor: int) -> None:
        """Attach from `cursor` on, quietly: no agent.session_resumed and no re-asked
        confirmation, for readers that keep their own place (the AG-UI adapter)."""
        self._room_for(session, connection)
        self._attach(session, connection, cursor)

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
        detail = detail or reason
        await session.cancel(f"the session ended ({detail}).", reason)
        session.emit(end_event(reason, detail))
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
