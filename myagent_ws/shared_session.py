"""One session shared by several server processes through the Redis store.

A `SharedSession` is this process's view of a session that lives in Redis. Its events get
their seqs from Redis, in the same script that appends them to the session's log, so
seqs stay gapless whichever processes emit (the one running the turn, one where a client
reconnects, one that ends a lost process's turn). Events wait in a small outbox for that
round trip, a batch at a time; the process that appended them hands them to its own
connections at once, and every process with a connection attached to the session reads
the rest from the log (node.py's tail), so a connection gets every event once, in order.

A turn runs where its `user.message` arrived, holding the session's "turn" in Redis: its
events are appended only while it still holds it (a fence), and its terminal event gives
it back in the same script, with the conversation memory, so the next turn can run on any
process. A cancel or an answer may arrive anywhere: the terminal event is then appended
by that process (one script: the turn can end once), and the running process is told over
pub/sub to stop (`abandon`) or to take the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from .protocol import ProtocolError, cut_content, encode
from .redis_store import FENCED, GONE, Appended, RedisStore, node_of, stamp
from .runner import PendingConfirm, interrupted_event
from .session import Session
from .sessions import (
    not_found,
)
from .store import StoreUnavailable, store_down

if TYPE_CHECKING:
    from .cluster import SharedSessions

log = logging.getLogger(__name__)

# Events waiting for Redis past which a turn waits (pace) before producing more.
OUTBOX_PACE = 256
# One append call carries at most this many events, or stops once past this many bytes.
BATCH_EVENTS = 128
BATCH_BYTES = 1 << 20
# An outbox entry: (event name, body, event, fence) or, for a turn's end, (None, memory,
# next turn's token, turn token).
Entry = tuple[Any, Any, Any, Any]


def stored_body(event: dict[str, Any], session_id: str, max_event_bytes: int) -> bytes:
    """The stored form of a session event: cut like Session.emit cuts it, encoded once,
    without its seq (see redis_store.stamp)."""
    event["session_id"] = session_id
    content = event.get("content")
    if type(content) is str and len(content) * 4 > max_event_bytes:
        cut_content(event, content, max_event_bytes)
    return encode(event)


class SharedSession(Session):
    """This process's view of a session in Redis: the turn it runs there, if any, and,
    while connections here are attached, a replay buffer fed from the session's log."""

    # Session._follower is the task that flushes the outbox (Session.drain awaits it).
    __slots__ = ("_outbox", "_sid", "ending", "mem_v", "tailing", "token")

    def __init__(
        self,
        session_id: str,
        agent_name: str,
        agent: Any,
        manager: SharedSessions,
        owner: str | None = None,
    ):
        super().__init__(session_id, agent_name, agent, manager, owner)
        self._outbox: deque[Entry] = deque()
        self._sid = session_id.encode()
        self.mem_v = -1  # the memory version the agent instance holds (-1: none)
        self.tailing = False  # connections here: keep the buffer, read the log
        self.token: str | None = None  # the turn this process runs, as Redis knows it
        self.ending = False

    @property
    def store(self) -> RedisStore:
        return self._manager.store

    def body(self, event: dict[str, Any]) -> bytes:
        return stored_body(event, self.id, self._manager.settings.max_event_bytes)

    # -- events ------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> bool:
        return self._put(event, None)

    def _put(self, event: dict[str, Any], fence: tuple[str, str] | None) -> bool:
        self._outbox.append((event["event"], self.body(event), event, fence))
        self._kick()
        return len(self._outbox) >= OUTBOX_PACE

    def _kick(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._flush(), name=f"flush {self.id}")

    async def pace(self) -> None:
        await super().pace()
        flusher = self._follower
        if len(self._outbox) >= OUTBOX_PACE and flusher is not None:
            await asyncio.wait([flusher], timeout=self._manager.settings.node_lease_s)

    async def _flush(self) -> None:
        """Append the outbox in order, a batch per round trip (a batch: entries with one
        fence, up to a turn's end, at most BATCH_EVENTS or about BATCH_BYTES)."""
        outbox = self._outbox
        while outbox:
            fence = outbox[0][3]
            batch: list[Entry] = []
            end: Entry | None = None
            size = 0
            while outbox and outbox[0][3] == fence:
                entry = outbox[0]
                if entry[0] is None:  # a turn's end goes with its terminal event
                    end = outbox.popleft()
                    break
                if batch and (len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES):
                    break
                batch.append(outbox.popleft())
                size += len(entry[1])
            try:
                appended = await self._append(batch, fence, end)
            except StoreUnavailable as exc:
                self._lost_events(fence, exc)
                continue
            if appended.first == FENCED:
                self._fenced(fence)
            elif appended.first == GONE:
                self._manager.vanished(self)
            else:
                await self.stored(appended.first, batch)
                if appended.next_text is not None:
                    self._run(appended.next_text, appended.holder)
                elif end is not None and self.tailing:
                    self._manager.node.follow()  # the tail reads this session again
        if self.turn is None or not self.turn.open:
            self._manager.release_if_idle(self)

    async def _append(self, batch: list[Entry], fence: Any, end: Entry | None) -> Appended:
        events = [(name, body) for name, body, _, _ in batch]
        if end is not None:
            _, memory, next_token, (_, token) = end
            appended = await self.store.finish(self.id, token, events, memory, next_token)
            if appended.first > 0 and memory is not None:
                self.mem_v += 1
            return appended
        close = any(name == "agent.session_end" for name, _ in events)
        return Appended(await self.store.append(self.id, events, fence, close))

    async def stored(self, first: int, batch: list[Entry]) -> None:
        """Events appended by this process as seqs first.. : to its own connections now,
        after any that other processes appended since this one last read the log; then to
        the plugins' observers."""
        manager = self._manager
        if self.tailing and first > self.buffer.last_seq + 1:
            with contextlib.suppress(StoreUnavailable):  # else the tail brings them later
                for seq, frame in await self.store.read(self.id, self.buffer.last_seq, first - 1):
                    self.take(seq, frame, from_log=True)
        for offset, (name, body, event, _) in enumerate(batch):
            seq = first + offset
            if self.tailing:  # else nobody here reads it: no frame to build
                self.take(seq, stamp(body, self._sid, seq))
            manager.metrics.event_sent(name)
            if manager.observe is not None and event is not None:
                event["seq"], event["event_id"] = seq, f"{self.id}:{seq}"
                await manager.notify(self.id, event)

    def take(self, seq: int, frame: bytes, from_log: bool = False) -> None:
        """The frame of `seq`: buffered and sent if it is the next one here; one that is
        here already is dropped. One past a gap waits for the tail, which reads the log in
        order; a gap in the log itself (trimmed before this process read it) restarts the
        buffer, and a connection that misses frames is closed to reconnect, which names
        the gap."""
        if not self.tailing:
            return
        last = self.buffer.last_seq
        if seq <= last:
            return
        if seq > last + 1:
            if not from_log:
                return
            log.warning("session %s: events %d..%d left the log unread", self.id, last + 1, seq - 1)
            self.buffer.restart(seq)
        self.seq = seq
        self._deliver(seq, frame)

    def _fenced(self, fence: Any) -> None:
        """Another process ended this turn (cancel there, or this one counted as lost)."""
        self._drop(fence)
        if self.tailing:
            self._manager.node.follow()  # the tail reads this session again

    def _drop(self, fence: Any) -> bool:
        """Forget what waits under `fence`, and stop its turn here (without a terminal
        event of its own); True if a turn was stopped."""
        # In place: a flush under way holds this deque, and must not go on with a copy.
        kept = [entry for entry in self._outbox if entry[3] != fence]
        self._outbox.clear()
        self._outbox.extend(kept)
        if fence is None or self.turn is None or self.token != fence[1]:
            return False
        self.mem_v = -1  # it may have finished here: take the stored memory next time
        return self.turn.abandon()

    def _lost_events(self, fence: Any, exc: Exception) -> None:
        """Redis stayed out of reach past the retries: the events are not kept, the turn
        stops, and connections here are told so (no seq: this gap is said out loud)."""
        log.error("session %s: events not stored: %s", self.id, exc)
        self._manager.metrics.store_error()
        if self._drop(fence):
            self._manager.node.orphan(self.id, fence[1])
        self.tell(
            store_down(
                self.id,
                "The session store (Redis) is unreachable: events of this session were not "
                "kept and its running turn was stopped. Send the message again in a moment.",
            )
        )

    def tell(self, error: ProtocolError) -> None:
        """A system.error (no seq: not a session event) to every connection here."""
        frame = encode(error.to_event())
        for connection in self.connections:
            connection.send(frame)

    # -- turns -------------------------------------------------------------------------------

    async def repeated(self, message_id: str) -> bool:
        """In Redis: a resend may reach another process than the first send."""
        return not await self.store.first_time(self.id, message_id)

    async def forget(self, message_id: str) -> None:
        await self.store.forget_message(self.id, message_id)

    async def start_turn(self, text: str) -> int:
        manager = self._manager
        manager.refuse_if_draining(self.id)
        settings = manager.settings
        if settings.on_busy == "interrupt":
            await self._stop(interrupted_event(), None)
        if self.agent is None:
            self.agent = manager.new_agent(self.agent_name)
        token = manager.node.new_token()
        policy = "queue" if settings.on_busy == "queue" else "reject"
        kind, value, memory = await self.store.begin(
            self.id, token, text, policy, settings.max_queued_messages, self.mem_v
        )
        if kind == "gone":
            self._manager.ended_elsewhere(self)
            raise not_found(self.id)
        if kind == "busy":
            raise self.busy_error(queue_full=policy == "queue")
        if kind == "queued":
            return value
        self.load_memory(value, memory)
        self._run(text, token)
        return 0

    def load_memory(self, version: int, memory: bytes | None) -> None:
        """The stored conversation memory, unless the agent here holds it already (None)."""
        messages = getattr(self.agent, "messages", None)
        if memory is not None and isinstance(messages, list):
            messages[:] = orjson.loads(memory) if memory else []
        self.mem_v = version

    def _run(self, text: str, token: str | None = None) -> None:
        fence = ("turn", token)
        self.token = token
        self._start(text, lambda event: self._put(event, fence), self._turn_ended, self)

    def _turn_ended(self, terminal: dict[str, Any]) -> None:
        """The terminal event is in the outbox: give the session back with it, and the
        memory if the turn completed (a failed turn leaves memory as it was)."""
        memory = None
        messages = getattr(self.agent, "messages", None)
        if terminal["event"] == "agent.final_answer" and isinstance(messages, list):
            memory = orjson.dumps(messages)
        self._outbox.append((None, memory, self._manager.node.new_token(), ("turn", self.token)))
        self._kick()

    async def ask(self, pending: PendingConfirm) -> None:
        """Questions: put it in Redis before it is sent, so any process can take the
        answer, and a reconnect anywhere asks it again."""
        event = pending.event()
        await self.store.ask(self.id, self.token, pending.step_id, self.body(event))

    async def withdraw(self, step_id: str) -> bool:
        return await self.store.claim(self.id, step_id) is not None

    async def respond(self, step_id: str, approved: bool, feedback: str | None) -> None:
        token = await self.store.claim(self.id, step_id)
        if token is None:
            raise self.not_pending(step_id)
        node = node_of(token)
        if node == self._manager.node.id:
            if self.turn is not None and self.token == token:
                self.turn.respond(step_id, approved, feedback)
        else:
            message = {"op": "answer", "sid": self.id, "token": token, "step": step_id}
            message |= {"approved": approved, "feedback": feedback}
            await self.store.publish(node, message)

    async def cancel(self, why: str, reason: str | None = None) -> bool:
        terminal = (
            interrupted_event(f"The turn was stopped: {why}", reason=reason)
            if reason
            else interrupted_event()
        )
        queued = interrupted_event(
            f"This queued message did not run: {why}", queued=True, reason=reason
        )
        return await self._stop(terminal, queued)

    async def _stop(self, terminal: dict[str, Any], queued: dict[str, Any] | None) -> bool:
        """End the running turn wherever it runs, with `terminal` (and each queued message
        with `queued`); False if none ran."""
        ended = (terminal["event"], self.body(terminal))
        dropped = (queued["event"], self.body(queued)) if queued is not None else None
        await self.drain()  # what this process emitted so far goes first
        appended = await self.store.stop(self.id, ended, dropped)
        if appended.first <= 0:
            return False
        entries = [(*ended, terminal, None)] + [(*dropped, None, None)] * (appended.count - 1)
        await self.stored(appended.first, entries)
        self.abandon_turn(appended.holder)
        return True

    def abandon_turn(self, token: str) -> None:
        """Another process ended turn `token`: stop it here, or tell its process."""
        node = node_of(token)
        manager = self._manager
        if node == manager.node.id:
            self._fenced(("turn", token))
            manager.release_if_idle(self)
        else:
            manager.node.tell(node, {"op": "stop", "sid": self.id, "token": token})
