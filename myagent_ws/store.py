"""Where session records and the per-session event log live.

Sessions talk to a Store, never to a dict, so that a Redis store can later let any of
several server processes serve any session.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .protocol import ProtocolError

# Tickets one process keeps at most; past it the oldest unused one is dropped (its client
# fetches another).
MAX_TICKETS = 100_000


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the message says what to check."""


def store_down(session_id: str | None = None, message: str | None = None) -> ProtocolError:
    """What a client is told when the store failed (the log has the detail)."""
    return ProtocolError(
        "internal_error",
        message
        or "The session store (Redis) is unreachable; try again in a moment. The server log "
        "has the details.",
        session_id=session_id,
    )


@dataclass(slots=True)
class SessionRecord:
    """What outlives a process: enough to find, describe and resume a session."""

    session_id: str
    agent: str
    created_at: float
    owner: str | None = None  # the principal that created it (None: auth is off)


class Store(ABC):
    """Session records and, for stores that outlive the process, the event log. Every
    method may do I/O, so all are async; none is called between stamping an event and
    sending it (sessions persist events after the fact, in order)."""

    # Whether append_events is worth calling: the replay buffer already holds recent events
    # in this process, so only a store shared with other processes keeps them too.
    keeps_events: bool = False

    @abstractmethod
    async def save_session(self, record: SessionRecord) -> None:
        """Create or overwrite a session record."""

    @abstractmethod
    async def load_session(self, session_id: str) -> SessionRecord | None:
        """The record, or None if the session is unknown or gone."""

    @abstractmethod
    async def delete_session(self, session_id: str) -> None:
        """Forget the record and its event log."""

    @abstractmethod
    async def issue_ticket(self, ticket: str, principal: str, ttl_s: float) -> None:
        """Keep a single-use ticket for `principal` for `ttl_s` seconds."""

    @abstractmethod
    async def redeem_ticket(self, ticket: str) -> str | None:
        """The ticket's principal, once: None if it is unknown, used or expired."""

    async def append_events(self, session_id: str, events: list[tuple[int, bytes]]) -> None:
        """Log encoded events (seq, frame), oldest first; called only if keeps_events."""
        raise NotImplementedError(f"{type(self).__name__} keeps no events")

    async def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release connections; nothing to do for stores that hold none."""


class MemoryStore(Store):
    """The single-process store: a dict of records (events live in each session's replay
    buffer)."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        # ticket -> (principal, expires at), oldest first
        self._tickets: dict[str, tuple[str, float]] = {}

    async def issue_ticket(self, ticket: str, principal: str, ttl_s: float) -> None:
        """Every ticket lives as long, so the oldest is first to expire: expired ones are
        dropped from the front, and past MAX_TICKETS the oldest unused one goes."""
        tickets, now = self._tickets, time.monotonic()
        while tickets and (len(tickets) >= MAX_TICKETS or next(iter(tickets.values()))[1] <= now):
            del tickets[next(iter(tickets))]
        tickets[ticket] = (principal, now + ttl_s)

    async def redeem_ticket(self, ticket: str) -> str | None:
        principal, expires = self._tickets.pop(ticket, (None, 0.0))
        return principal if expires > time.monotonic() else None

    async def save_session(self, record: SessionRecord) -> None:
        self._records[record.session_id] = record

    async def load_session(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def delete_session(self, session_id: str) -> None:
        self._records.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._records)
