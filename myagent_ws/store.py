"""Where session records and the per-session event log live.

Sessions talk to a Store, never to a dict, so that a Redis store can later let any of
several server processes serve any session. The event log keeps encoded frames (one
encode per event) in a bounded buffer: what a reconnecting client can be replayed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class SessionRecord:
    """What outlives a process: enough to find, describe and resume a session."""

    session_id: str
    agent: str
    created_at: float


class Store(ABC):
    """Session state and event log; every method may do I/O, so all are async."""

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
    async def append_event(self, session_id: str, seq: int, frame: str) -> None:
        """Log one encoded event; the oldest are dropped past the buffer size."""

    @abstractmethod
    async def events_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        """Logged (seq, frame) pairs with seq greater than `seq`, oldest first."""

    @abstractmethod
    async def trim_events(self, session_id: str, upto_seq: int) -> None:
        """Drop logged events up to and including `upto_seq` (the client has them)."""

    async def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release connections; nothing to do for stores that hold none."""


class MemoryStore(Store):
    """The single-process store: plain dicts and one bounded deque per session."""

    def __init__(self, replay_buffer: int = 1000) -> None:
        self._replay_buffer = replay_buffer
        self._records: dict[str, SessionRecord] = {}
        self._logs: dict[str, deque[tuple[int, str]]] = {}

    async def save_session(self, record: SessionRecord) -> None:
        self._records[record.session_id] = record
        self._logs.setdefault(record.session_id, deque(maxlen=self._replay_buffer))

    async def load_session(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def delete_session(self, session_id: str) -> None:
        self._records.pop(session_id, None)
        self._logs.pop(session_id, None)

    async def append_event(self, session_id: str, seq: int, frame: str) -> None:
        log = self._logs.get(session_id)
        if log is not None:
            log.append((seq, frame))

    async def events_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        return [item for item in self._logs.get(session_id, ()) if item[0] > seq]

    async def trim_events(self, session_id: str, upto_seq: int) -> None:
        log = self._logs.get(session_id)
        while log and log[0][0] <= upto_seq:
            log.popleft()

    def __len__(self) -> int:
        return len(self._records)
