"""SharedSession's outbox against a scripted store, for orderings a real cluster makes
rare: what happens to events queued while an append is on its way to Redis."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from myagent_ws.protocol import make_event
from myagent_ws.redis_store import FENCED
from myagent_ws.settings import Settings
from myagent_ws.shared_session import SharedSession


class ScriptedStore:
    """append() answers FENCED for fenced batches, once `release` is set; else numbers
    the events from 1. Records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str]]] = []
        self.release = asyncio.Event()
        self.seq = 0

    async def append(self, sid: str, events: list, fence: Any = None, close: bool = False) -> int:
        self.calls.append((fence, [name for name, _ in events]))
        if fence is not None:
            await self.release.wait()
            return FENCED
        first, self.seq = self.seq + 1, self.seq + len(events)
        return first


async def test_events_queued_while_a_fenced_append_waits_are_stored_once() -> None:
    store = ScriptedStore()
    manager = SimpleNamespace(
        settings=Settings(),
        store=store,
        metrics=SimpleNamespace(event_sent=lambda name: None),
        observe=None,
        release_if_idle=lambda session: None,
    )
    session = SharedSession("s_1", "agent", None, manager)
    session.token = "node|1"
    session._put(make_event("agent.partial_answer", content="a"), ("turn", "node|1"))
    await asyncio.sleep(0)  # the flush is on its way with the fenced event
    session.emit(make_event("agent.session_resumed", content={"session_id": "s_1"}))
    store.release.set()  # the turn turns out to be fenced off: its events are dropped
    await session.drain()
    await session.drain()  # a flush the first one started, if any
    assert store.calls == [
        (("turn", "node|1"), ["agent.partial_answer"]),
        (None, ["agent.session_resumed"]),
    ]
    assert not session._outbox
