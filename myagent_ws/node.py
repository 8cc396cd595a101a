"""One server process among several sharing a Redis store: its lease, its tail of the
session logs, its control channel, and the watch for processes that died.

- Lease: the process renews `node:<id>` every fifth of node_lease_s, with a lifetime of
  LEASE_SHARE of it. A process that stops renewing (killed, hung, cut off from Redis) is
  found by the others, which look every tenth of node_lease_s; one of them ends each of
  its running turns with agent.error `node_lost` (one script per session: only one can),
  and runs the session's next queued message, if any. So a lost turn ends within
  node_lease_s, and a process stalled for under half of it is not counted as lost.
- Tail: one blocking XREAD over the logs of every session with a connection here (plus
  this process's wake stream, written when that set changes), from each one's last seq.
  A session whose turn runs here is left out: this process appended its events and has
  them already (what another process appended in between comes with its next append,
  shared_session.py), so no event is read back by the process that wrote it.
- Control: pub/sub on `ctl:<id>`: stop a turn that another process ended, or take the
  answer to its question.
Every loop survives Redis going away: it counts the error, says so once, and retries
with a bounded backoff; /ready answers 503 until the lease is renewed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from .redis_store import RedisStore, entry_seq, stamp
from .runner import error_event
from .sessions import NODE_ID
from .shared_session import stored_body
from .store import StoreUnavailable

if TYPE_CHECKING:
    from .cluster import SharedSessions
    from .metrics import Metrics
    from .shared_session import SharedSession

log = logging.getLogger(__name__)

LEASE_SHARE = 0.8  # of node_lease_s: how long a renewed lease lasts
TAIL_BATCH = 512  # entries per log per read
TAIL_BLOCK_MS = 5000
MAX_BACKOFF_S = 2.0


class Node:
    """This process in the cluster."""

    def __init__(self, sessions: SharedSessions, store: RedisStore, metrics: Metrics) -> None:
        self.id = f"{NODE_ID}-{secrets.token_hex(3)}"  # a restarted pid is another node
        self.sessions = sessions
        self.store = store
        self.metrics = metrics
        self.lease_s = sessions.settings.node_lease_s
        self.healthy = False  # the lease was renewed lately
        self._turns = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._waking: asyncio.Task[None] | None = None
        self._orphans: dict[str, str] = {}  # session -> turn left holding it (Redis was down)
        self._failing: set[str] = set()  # loops now failing, so each outage is said once
        self._telling: set[asyncio.Task[Any]] = set()
        self._woken_to = b"0-0"  # the last entry of this node's wake stream read

    def new_token(self) -> str:
        """A turn's token, "<node>|<n>": the node that runs it is part of its name."""
        return f"{self.id}|{next(self._turns)}"

    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._renew()  # not fatal: /ready says 503 until Redis answers
        for loop in (self._lease_loop, self._watch_loop, self._tail_loop, self._control_loop):
            self._tasks.append(asyncio.create_task(loop(), name=loop.__name__))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # Redis may be gone: the lease runs out then
            await self.store.retire(self.id)

    def _failed(self, where: str, exc: BaseException) -> None:
        if not isinstance(exc, StoreUnavailable):  # those are counted by the store
            self.store.count_error(where)
        if where not in self._failing:
            self._failing.add(where)
            log.error("Redis %s failed: %s (retrying)", where, exc)

    def _recovered(self, where: str) -> None:
        if where in self._failing:
            self._failing.discard(where)
            log.info("Redis %s works again", where)

    async def _forever(self, where: str, step: Any, interval_s: float) -> None:
        """Run `step` every interval_s; on a failure, back off (bounded) and go on."""
        backoff = 0.1
        while True:
            try:
                await step()
            except (StoreUnavailable, RedisError, OSError) as exc:
                self._failed(where, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception:
                log.exception("cluster %s failed", where)
            else:
                backoff = 0.1
                self._recovered(where)
            await asyncio.sleep(interval_s)

    # -- lease --------------------------------------------------------------------------------

    async def _renew(self) -> None:
        try:
            await self.store.renew(self.id, int(self.lease_s * LEASE_SHARE * 1000))
        except StoreUnavailable:
            self.healthy = False
            raise
        self.healthy = True
        for session_id, token in list(self._orphans.items()):
            await self._end_orphan(session_id, token)

    async def _lease_loop(self) -> None:
        await self._forever("lease", self._renew, self.lease_s / 5)

    def orphan(self, session_id: str, token: str) -> None:
        """A turn stopped here while Redis was out of reach still holds its session
        there: end it once Redis answers again."""
        self._orphans[session_id] = token

    async def _end_orphan(self, session_id: str, token: str) -> None:
        message = (
            "The session store (Redis) was unreachable, so this turn was stopped; send the "
            "message again."
        )
        name, body, _ = self._terminal(session_id, "internal_error", message)
        await self.store.stop(session_id, (name, body), None, self.id)
        del self._orphans[session_id]

    def _terminal(self, session_id: str, code: str, message: str) -> tuple[str, bytes, Any]:
        """An agent.error this process appends for a turn it does not run: (name, body,
        event)."""
        event = error_event(code, message)
        body = stored_body(event, session_id, self.sessions.settings.max_event_bytes)
        return event["event"], body, event

    # -- lost processes -------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        await self._forever("watch", self._watch, self.lease_s / 10)

    async def _watch(self) -> None:
        lost = await self.store.lost_nodes(self.id)
        for node, session_ids in lost.items():
            for session_id in session_ids:
                await self._end_lost_turn(node, session_id)
            await self.store.forget_node(node)

    async def _end_lost_turn(self, node: str, session_id: str) -> None:
        message = (
            "The server process running this turn stopped answering, so the turn was "
            "ended; send the message again (any server can run it)."
        )
        name, body, terminal = self._terminal(session_id, "node_lost", message)
        next_token = None if self.sessions.draining else self.new_token()
        appended = await self.store.stop(session_id, (name, body), None, node, next_token)
        if appended.first <= 0:
            return
        log.warning("session %s: process %s was lost; its turn ended here", session_id, node)
        session = self.sessions.sessions.get(session_id)
        if session is not None:
            await session.stored(appended.first, [(name, body, terminal, None)])
        if appended.next_text is not None:
            await self.sessions.adopt(session_id, appended.next_text, next_token)

    # -- control --------------------------------------------------------------------------------

    def tell(self, node: str, message: dict[str, Any]) -> None:
        """Publish to another process without waiting (it acts on its own time)."""
        task = asyncio.create_task(self.store.publish(node, message))
        self._telling.add(task)
        task.add_done_callback(self._told)

    def _told(self, task: asyncio.Task[Any]) -> None:
        self._telling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failed("publish", task.exception())

    async def _control_loop(self) -> None:
        await self._forever("control", self._listen, 0)

    async def _listen(self) -> None:
        async with self.store.blocking.pubsub() as pubsub:
            await pubsub.subscribe(self.store.channel(self.id))
            self._recovered("control")
            while True:  # get_message, not listen(): no async generator left to close
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if message is not None:
                    self._on_control(orjson.loads(message["data"]))

    def _on_control(self, message: dict[str, Any]) -> None:
        session = self.sessions.sessions.get(message.get("sid", ""))
        if session is None or session.turn is None or session.token != message.get("token"):
            return
        if message["op"] == "stop":
            session.abandon_turn(message["token"])
        elif message["op"] == "answer":
            session.turn.respond(message["step"], message["approved"], message.get("feedback"))

    # -- tail -----------------------------------------------------------------------------------

    def follow(self) -> None:
        """A session got its first connection here: make the blocked read start over."""
        if self._waking is None or self._waking.done():
            self._waking = asyncio.create_task(self._wake())

    async def _wake(self) -> None:
        try:
            await self.store.wake(self.id)
        except StoreUnavailable as exc:
            self._failed("tail", exc)

    async def _tail_loop(self) -> None:
        await self._forever("tail", self._tail, 0)

    async def _tail(self) -> None:
        followed: dict[bytes, SharedSession] = {}
        streams: dict[Any, Any] = {self.store.wake_key(self.id): self._woken_to}
        for session in self.sessions.sessions.values():
            if session.tailing and not session.closed and not session.busy:
                key = self.store.log_key(session.id)
                followed[key.encode()] = session
                streams[key] = f"{session.buffer.last_seq}-0"
        reply = await self.store.blocking.xread(streams, count=TAIL_BATCH, block=TAIL_BLOCK_MS)
        now_ms = time.time() * 1000
        for key, entries in reply or ():
            session = followed.get(key)
            if session is None:
                self._woken_to = entries[-1][0]
                continue
            oldest = float(entries[0][1].get(b"t", now_ms))
            self.metrics.stream_lag(max(now_ms - oldest, 0.0) / 1000)
            sid = session.id.encode()
            for entry_id, fields in entries:
                if not session.tailing:
                    break
                seq = entry_seq(entry_id)
                session.take(seq, stamp(fields[b"f"], sid, seq), from_log=True)
                if fields[b"e"] == b"agent.session_end":
                    self.sessions.ended_elsewhere(session)
                    break
