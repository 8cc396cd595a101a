"""The Redis store: session records, event logs and turns shared by server processes.

What needs to be atomic across processes (a seq and its append, taking and giving back a
session's turn, the first answer to a question) is one Lua script each
(`redis_store.lua`, sent by SHA, re-sent by redis-py after a Redis restart). Everything
else is plain commands. A frame is stored without its seq; `stamp` adds it, the one
place that does, for the process that appended it and for every process that reads it.

Keys (under `prefix`): `s:<id>` (record), `s:<id>:log` (stream), `s:<id>:q` (queue),
`node:<id>` (a process's lease), `node:<id>:turns`, `nodes`, `ctl:<id>` (pub/sub: stop
and answer requests for the turns a process runs), `wake:<id>` (wakes its tail).
Standalone Redis (or one shard): a script touches a node's keys next to a session's.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from importlib.resources import files
from typing import Any, TypeVar

import orjson
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .store import SessionRecord, Store, StoreUnavailable

__all__ = ["Appended", "RedisStore", "stamp"]


def stamp(body: bytes, session_id: bytes, seq: int) -> bytes:
    """The frame of a stored body: its seq and event_id go last, as Session.emit puts
    them, so a frame is the same bytes whichever store holds it."""
    return b'%s,"seq":%d,"event_id":"%s:%d"}' % (body[:-1], seq, session_id, seq)


def node_of(token: str) -> str:
    """The node that runs a turn, from its token "<node>|<n>" (as the scripts read it)."""
    return token.split("|", 1)[0]


def redacted(url: str) -> str:
    """host:port/db of a Redis URL: what messages and the banner show (no password)."""
    return url.split("://", 1)[-1].split("@")[-1]


def _scripts() -> dict[str, str]:
    text = files(__package__).joinpath("redis_store.lua").read_text(encoding="utf-8")
    shared, *parts = text.split("\n--- ")
    return {name.strip(): f"{shared}\n{body}" for name, body in (p.split("\n", 1) for p in parts)}


T = TypeVar("T")


def _guarded(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Redis failures (after redis-py's own retries) become StoreUnavailable, counted."""

    @wraps(method)
    async def call(self: RedisStore, *args: Any, **kwargs: Any) -> T:
        try:
            return await method(self, *args, **kwargs)
        except RedisError as exc:
            self.count_error(method.__name__)
            raise StoreUnavailable(f"Redis at {self.where} failed: {exc}") from exc

    return call


@dataclass(slots=True)
class Appended:
    """What a script appended: from seq `first` (0: nothing; stop also says how many)."""

    first: int
    count: int = 0
    holder: str | None = None  # the turn a stop ended, or the one a finish started
    next_text: str | None = None  # a queued message that now runs as the caller's turn


# Redis connections a process uses for calls (its scripts are short: more would only
# queue inside Redis, which runs one command at a time).
POOL_SIZE = 32


@dataclass(slots=True)
class Snapshot:
    """A session as a reconnect finds it."""

    agent: str
    owner: str | None  # the principal that created it
    seq: int  # the last seq allocated
    frames: list[tuple[int, bytes]]  # stored frames after the reconnect's last_seq
    question: tuple[str, bytes] | None  # the waiting question (step_id, body)


FENCED = -1
GONE = -2


class RedisStore(Store):
    """Sessions in Redis, so that any of several server processes serves any session."""

    # Events are appended by SharedSession with seqs from Redis, not after the fact.
    keeps_events = False

    def __init__(
        self,
        url: str,
        prefix: str = "myagent-ws:",
        *,
        ttl_s: float = 300.0,
        max_events: int = 1000,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.where = redacted(url)
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.max_events = max_events
        self.max_bytes = max_bytes
        options: dict[str, Any] = {
            "socket_timeout": 5.0,
            "socket_connect_timeout": 2.0,
            # A restart or a blip of a second or two is retried before anyone sees it.
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 10,
        }
        # Past `max_connections` calls in flight, a call waits for a connection (the default
        # pool fails it instead).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=options["socket_timeout"], **options
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        # Blocking reads (the tail, pub/sub) get their own connections.
        self.blocking = aioredis.Redis.from_url(url, **{**options, "socket_timeout": None})
        self._scripts = {
            name: self.redis.register_script(source) for name, source in _scripts().items()
        }
        self.errors: dict[str, int] = {}  # calls that failed after retries, by call
        # Names append calls, so a retried one appends nothing twice (see the script).
        self._batches = (f"{secrets.token_hex(6)}:{n}" for n in itertools.count(1))

    def count_error(self, call: str) -> None:
        self.errors[call] = self.errors.get(call, 0) + 1

    # -- keys ------------------------------------------------------------------------------

    def record_key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    def log_key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}:log"

    def keys(self, session_id: str) -> list[str]:
        """A session's keys, as every script takes them: record, log, queue."""
        record = self.record_key(session_id)
        return [record, f"{record}:log", f"{record}:q"]

    def lease_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def turns_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}:turns"

    def channel(self, node: str) -> str:
        return f"{self.prefix}ctl:{node}"

    def wake_key(self, node: str) -> str:
        return f"{self.prefix}wake:{node}"

    async def _run(self, name: str, session_id: str, args: list[Any]) -> Any:
        return await self._scripts[name](keys=self.keys(session_id), args=args)

    def _limits(self) -> list[Any]:
        return [self.ttl_ms, self.max_events, self.max_bytes]

    # -- the Store interface -----------------------------------------------------------------

    @_guarded
    async def save_session(self, record: SessionRecord) -> None:
        key = self.record_key(record.session_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                key,
                mapping={
                    "agent": record.agent,
                    "owner": record.owner or "",
                    "created": record.created_at,
                    "seen": record.created_at,
                },
            )
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    @_guarded
    async def load_session(self, session_id: str) -> SessionRecord | None:
        agent, owner, created, closed = await self.redis.hmget(
            self.record_key(session_id), "agent", "owner", "created", "closed"
        )
        if agent is None or closed == b"1":
            return None
        return SessionRecord(session_id, agent.decode(), float(created), owner.decode() or None)

    @_guarded
    async def delete_session(self, session_id: str) -> None:
        await self.redis.unlink(*self.keys(session_id))

    @_guarded
    async def issue_ticket(self, ticket: str, principal: str, ttl_s: float) -> None:
        await self.redis.set(self._ticket_key(ticket), principal, px=int(ttl_s * 1000))

    @_guarded
    async def redeem_ticket(self, ticket: str) -> str | None:
        """Any process redeems a ticket any other issued, exactly once (GETDEL)."""
        principal = await self.redis.getdel(self._ticket_key(ticket))
        return None if principal is None else principal.decode()

    @_guarded
    async def first_time(self, session_id: str, message_id: str) -> bool:
        """True the first time a session's message id is seen (SET NX, kept for the TTL)."""
        key = self._message_key(session_id, message_id)
        return bool(await self.redis.set(key, 1, nx=True, px=self.ttl_ms))

    @_guarded
    async def forget_message(self, session_id: str, message_id: str) -> None:
        await self.redis.delete(self._message_key(session_id, message_id))

    def _ticket_key(self, ticket: str) -> str:
        return f"{self.prefix}ticket:{ticket}"

    def _message_key(self, session_id: str, message_id: str) -> str:
        return f"{self.prefix}msgid:{session_id}:{message_id}"

    async def close(self) -> None:
        await self.redis.aclose()
        await self.blocking.aclose()

    # -- sessions, events and turns ------------------------------------------------------------

    @_guarded
    async def create(self, record: SessionRecord, name: str, body: bytes) -> int:
        """Save a new record with its first event; returns that event's seq (1)."""
        args = [*self._limits(), record.agent, record.owner or "", record.created_at, name, body]
        return int(await self._run("create", record.session_id, args))

    @_guarded
    async def append(
        self,
        session_id: str,
        events: list[tuple[str, bytes]],
        fence: tuple[str, str] | None = None,
        close: bool = False,
    ) -> int:
        """Append (name, body) events; the first one's seq, FENCED if record[field] is not
        value for `fence` (field, value), GONE if the session is not there."""
        field, value = fence or ("", "")
        batch = next(self._batches)
        args = [*self._limits(), field, value, "1" if close else "", batch, len(events)]
        for name, body in events:
            args += (name, body)
        return int(await self._run("append", session_id, args))

    @_guarded
    async def finish(
        self,
        session_id: str,
        token: str,
        events: list[tuple[str, bytes]],
        memory: bytes | None,
        next_token: str | None,
    ) -> Appended:
        """The turn `token` appends its last events and gives the session back, or runs
        the next queued message as `next_token` (then `holder` and `next_text`); first
        FENCED if it no longer held it."""
        args = [*self._limits(), self.prefix, session_id, token, memory or b"", next_token or ""]
        args.append(len(events))
        for name, body in events:
            args += (name, body)
        reply = await self._run("finish", session_id, args)
        first = int(reply[0])
        text = reply[1].decode() if len(reply) > 1 and reply[1] else None
        return Appended(first, next_text=text, holder=next_token if text else None)

    @_guarded
    async def stop(
        self,
        session_id: str,
        terminal: tuple[str, bytes],
        queued: tuple[str, bytes] | None = None,
        expect_node: str | None = None,
        next_token: str | None = None,
    ) -> Appended:
        """End the running turn with `terminal`, from any process; see the script."""
        queued_name, queued_body = queued or ("", b"")
        args = [*self._limits(), self.prefix, session_id, expect_node or "", next_token or ""]
        args += [*terminal, queued_name, queued_body]
        reply = await self._run("stop", session_id, args)
        first = int(reply[0])
        if first <= 0:
            return Appended(first)
        holder = reply[1].decode()
        return Appended(first, int(reply[2]), holder, reply[3].decode() if reply[3] else None)

    @_guarded
    async def begin(
        self, session_id: str, token: str, text: str, policy: str, max_queued: int, mem_v: int
    ) -> tuple[str, Any, Any]:
        """Take the session for turn `token`: ('run', mem_v, memory: None if `mem_v` is
        current, b"" for none yet), ('queued',
        position, None), ('busy', holder, None) or ('gone', None, None)."""
        args = [self.ttl_ms, self.prefix, session_id, token, text, policy, max_queued]
        reply = await self._run("begin", session_id, [*args, mem_v, time.time()])
        kind = reply[0].decode()
        if kind == "run":
            return kind, int(reply[1]), reply[2]
        if kind == "queued":
            return kind, int(reply[1]), None
        return kind, reply[1].decode() if len(reply) > 1 else None, None

    @_guarded
    async def ask(self, session_id: str, token: str, step_id: str, body: bytes) -> bool:
        """Record the question of turn `token`, for answers and reconnects anywhere."""
        return bool(await self._run("ask", session_id, [token, step_id, body]))

    @_guarded
    async def claim(self, session_id: str, step_id: str) -> str | None:
        """Take the question `step_id` away for its one answer: the token of the turn
        to tell, or None if nothing waits as step_id."""
        token = await self._run("claim", session_id, [step_id])
        return token.decode() if token else None

    @_guarded
    async def snapshot(self, session_id: str, after: int, count: int) -> Snapshot | None:
        """What a reconnect needs, in one round trip; None if the session is gone."""
        async with self.redis.pipeline(transaction=False) as pipe:
            record = self.record_key(session_id)
            pipe.hmget(record, "agent", "owner", "seq", "closed", "pending", "pending_body")
            pipe.xrange(self.log_key(session_id), min=f"({after}-0", max="+", count=count)
            (agent, owner, seq, closed, step, body), entries = await pipe.execute()
        if agent is None or closed == b"1":
            return None
        question = (step.decode(), body) if step and body else None
        frames = self._frames(session_id, entries)
        return Snapshot(agent.decode(), owner.decode() or None, int(seq or 0), frames, question)

    @_guarded
    async def read(self, session_id: str, after: int, upto: int) -> list[tuple[int, bytes]]:
        """The stored frames of seqs after `after` up to `upto`, oldest first."""
        entries = await self.redis.xrange(
            self.log_key(session_id), min=f"({after}-0", max=f"{upto}-0"
        )
        return self._frames(session_id, entries)

    def _frames(self, session_id: str, entries: list[Any]) -> list[tuple[int, bytes]]:
        sid = session_id.encode()
        seqs = [(entry_seq(entry_id), fields[b"f"]) for entry_id, fields in entries]
        return [(seq, stamp(body, sid, seq)) for seq, body in seqs]

    @_guarded
    async def memory(self, session_id: str, known: int) -> tuple[int, bytes | None]:
        """The conversation memory's version, and the memory (b"" for none yet) if that is
        not `known`."""
        version, memory = await self.redis.hmget(self.record_key(session_id), "mem_v", "mem")
        version = int(version or 0)
        return version, (memory or b"" if version != known else None)

    @_guarded
    async def seen(self, session_ids: list[str]) -> list[float | None]:
        """When each session last got a message (None: gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.hget(self.record_key(sid), "seen")
            values = await pipe.execute()
        return [float(v) if v is not None else None for v in values]

    @_guarded
    async def touch(self, session_ids: list[str]) -> None:
        """Keep these sessions' keys alive another ttl (a process serves them)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                for key in self.keys(sid):
                    pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    # -- processes -------------------------------------------------------------------------------

    @_guarded
    async def renew(self, node: str, lease_ms: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.lease_key(node), int(time.time() * 1000), px=lease_ms)
            pipe.sadd(f"{self.prefix}nodes", node)
            pipe.pexpire(self.wake_key(node), lease_ms)
            await pipe.execute()

    @_guarded
    async def retire(self, node: str) -> None:
        """A process leaves: its lease goes, so the others at once treat it as lost (and
        end any turn it could not), then forget it."""
        await self.redis.delete(self.lease_key(node), self.wake_key(node))

    @_guarded
    async def lost_nodes(self, me: str) -> dict[str, list[str]]:
        """Processes whose lease lapsed, with the sessions whose turns they ran."""
        nodes = [n.decode() for n in await self.redis.smembers(f"{self.prefix}nodes")]
        others = [n for n in nodes if n != me]
        if not others:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in others:
                pipe.exists(self.lease_key(node))
            alive = await pipe.execute()
        lost = {}
        for node, up in zip(others, alive, strict=True):
            if not up:
                turns = await self.redis.smembers(self.turns_key(node))
                lost[node] = [sid.decode() for sid in turns]
        return lost

    @_guarded
    async def forget_node(self, node: str) -> None:
        """A lost process whose turns were all ended."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(f"{self.prefix}nodes", node)
            pipe.delete(self.turns_key(node), self.wake_key(node))
            await pipe.execute()

    @_guarded
    async def publish(self, node: str, message: dict[str, Any]) -> int:
        """Tell process `node`; how many listened (0: it is gone)."""
        return await self.redis.publish(self.channel(node), orjson.dumps(message))

    @_guarded
    async def wake(self, node: str) -> None:
        """Make process `node`'s blocked tail read again (it follows a new session)."""
        await self.redis.xadd(self.wake_key(node), {"w": 1}, maxlen=1, approximate=False)


def entry_seq(entry_id: bytes) -> int:
    """The seq of a log entry (its id is "<seq>-0")."""
    return int(entry_id.split(b"-", 1)[0])
