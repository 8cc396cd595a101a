"""Load client for `make bench`: many WebSocket connections, one session each, timed turns.

    .venv/bin/python bench/load.py --url ws://127.0.0.1:8080/ --connections 1000 --turns 3
    .venv/bin/python bench/load.py --url ws://127.0.0.1:8080/ --connections 10000 --idle

Talks only the wire protocol (docs/protocol.md), so it measures any server that speaks it:
myagent-ws and the bare aiohttp reference alike. Prints one JSON object. Every loop is
bounded in count and every phase in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script: see run.py
from bench.serving import raise_open_files
from myagent_ws.client import TERMINAL

QUESTION = "北京今天天气怎么样？"
NOT_TURN = frozenset({"agent.session_created", "agent.session_resumed"})
# The fake LLM stamps each answer token with its send time: µs modulo 1e10.
STAMP = re.compile(r"t(\d{10}) ")
STAMP_MOD = 10**10
CONNECT_CONCURRENCY = 200
CONNECT_TIMEOUT_S = 180.0
HANDSHAKE_TIMEOUT_S = 30.0
TURN_TIMEOUT_S = 120.0
MAX_FRAMES_PER_CONNECTION = 1_000_000
MAX_HANDSHAKE_FRAMES = 100
CLOSE_TIMEOUT_S = 20.0
# hold_idle: a connection counts as held if still open this long after the connect phase;
# it is held at most HOLD_TIMEOUT_S.
SETTLE_S = 1.0
HOLD_TIMEOUT_S = 600.0
# Frames as bytes, straight to orjson (no str decode), where this aiohttp has the option.
WS_OPTIONS: dict[str, Any] = (
    {"decode_text": False}
    if "decode_text" in inspect.signature(aiohttp.ClientSession.ws_connect).parameters
    else {}
)
# permessage-deflate window bits to offer (0: none, as aiohttp's client defaults to;
# browsers offer 15). `--compress 15` measures what compression costs the server.
COMPRESS = 0
CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an unsorted list (None when empty): no numpy needed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _ms(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
    return {
        "p50": None if p50 is None else round(p50 * scale, 3),
        "p99": None if p99 is None else round(p99 * scale, 3),
    }


def _token_delays_us(content: Any) -> list[int]:
    """The delay since the fake LLM's write of each answer token stamped in `content` (an
    agent.partial_answer's), in µs."""
    if not isinstance(content, str) or "t" not in content:
        return []
    now_us = time.time_ns() // 1000
    return [(now_us - int(stamp)) % STAMP_MOD for stamp in STAMP.findall(content)]


async def _close(ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None] | None) -> None:
    """Cancel a connection's reader task, then close it (whatever the close raises)."""
    if reader is not None:
        reader.cancel()
    with contextlib.suppress(Exception):
        await ws.close()


@dataclass
class Stats:
    """What all connections of one run saw; filled in place so a timed-out run still reports."""

    counting: bool = False
    events: int = 0
    first: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    routing_us: list[int] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    missing_seq: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, what: str) -> None:
        self.errors[what[:200]] += 1


class Client:
    """One connection with one session; a reader task answers pings and times every frame."""

    __slots__ = (
        "closed",
        "done",
        "first_at",
        "message",
        "reader",
        "seq",
        "sid",
        "started",
        "stats",
        "ws",
    )

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stats: Stats) -> None:
        self.ws = ws
        self.stats = stats
        self.sid: str | None = None
        self.seq = 0
        self.message = ""
        self.reader: asyncio.Task[None] | None = None
        self.done: asyncio.Future[str] | None = None
        self.started = 0.0
        self.first_at: float | None = None
        self.closed = False

    async def handshake(self) -> None:
        """system.connected, then user.create_session until agent.session_created."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await self.ws.send_str('{"event":"user.create_session"}')
            for _ in range(MAX_HANDSHAKE_FRAMES):
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed during handshake ({msg.type.name})")
                event = orjson.loads(msg.data)
                if event.get("event") == "agent.session_created":
                    self.sid = event.get("session_id") or (event.get("content") or {}).get(
                        "session_id"
                    )
                    self._check_seq(event)
                    break
                if event.get("event") == "system.error":
                    raise ConnectionError(f"system.error: {event.get('content')}")
            else:
                raise ConnectionError("no agent.session_created")
        if not self.sid:
            raise ConnectionError("agent.session_created without a session_id")
        self.message = orjson.dumps(
            {"event": "user.message", "session_id": self.sid, "content": QUESTION}
        ).decode()
        self.reader = asyncio.create_task(self._read())

    def _check_seq(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int):
            self.stats.missing_seq += 1
            return
        expected = self.seq + 1
        if seq == expected:
            self.seq = seq
        elif seq > expected:
            self.stats.gaps += seq - expected
            self.seq = seq
        elif seq == self.seq:
            self.stats.duplicates += 1
        else:
            self.stats.out_of_order += 1

    async def _read(self) -> None:
        """Reads until close (or cancel): aiohttp answers pings only inside receive()."""
        ws = self.ws
        try:
            for _ in range(MAX_FRAMES_PER_CONNECTION):
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_frame(msg.data)
                elif msg.type in CLOSED_TYPES or msg.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self.closed = True
            if self.done is not None and not self.done.done():
                self.done.set_result("closed")

    def _on_frame(self, data: str | bytes) -> None:
        received = time.perf_counter()
        event = orjson.loads(data)
        if not event.get("session_id"):
            return  # system.heartbeat, system.notice: no session, no seq
        stats = self.stats
        self._check_seq(event)
        if stats.counting:
            stats.events += 1
        done = self.done
        if done is None or done.done():
            return
        if self.first_at is None:
            self.first_at = received
            stats.first.append(received - self.started)
        kind = event.get("event")
        if kind == "agent.partial_answer":
            stats.routing_us += _token_delays_us(event.get("content"))
        elif kind in TERMINAL:
            stats.final.append(received - self.started)
            done.set_result(kind)
        elif kind == "system.error":
            stats.error(f"system.error: {event.get('content')}")

    async def run(self, turns: int, gate: asyncio.Semaphore | None) -> None:
        """`turns` turns in a row; each holds a slot of `gate` (turns in flight) if given."""
        loop = asyncio.get_running_loop()
        for _ in range(turns):
            if self.closed:
                self.stats.kinds["closed"] += 1
                return
            async with gate if gate is not None else contextlib.nullcontext():
                self.done = loop.create_future()
                self.first_at = None
                self.started = time.perf_counter()
                try:
                    await self.ws.send_str(self.message)
                    kind = await asyncio.wait_for(self.done, TURN_TIMEOUT_S)
                except TimeoutError:
                    kind = "client_timeout"
                except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                    self.stats.error(repr(exc))
                    kind = "closed"
                self.stats.kinds[kind] += 1
                if kind in ("client_timeout", "closed"):
                    return  # the session may still be busy: no further turns on it

    async def close(self) -> None:
        await _close(self.ws, self.reader)


async def _open(
    http: aiohttp.ClientSession, url: str, stats: Stats, gate: asyncio.Semaphore
) -> Client | None:
    async with gate:
        ws = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                ws = await http.ws_connect(
                    url,
                    max_msg_size=0,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    compress=COMPRESS,
                    **WS_OPTIONS,
                )
            client = Client(ws, stats)
            await client.handshake()
            return client
        except (TimeoutError, OSError, aiohttp.ClientError, ConnectionError, ValueError) as exc:
            stats.error(f"connect: {exc!r}")
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            return None


async def open_clients(
    http: aiohttp.ClientSession, url: str | list[str], connections: int, stats: Stats
) -> list[Client]:
    """Connects and creates sessions, CONNECT_CONCURRENCY handshakes at once; drops the
    failures. With several URLs (server processes), connection i goes to url[i mod n]."""
    urls = [url] if isinstance(url, str) else url
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [
        asyncio.create_task(_open(http, urls[i % len(urls)], stats, gate))
        for i in range(connections)
    ]
    done, pending = await asyncio.wait(tasks, timeout=CONNECT_TIMEOUT_S)
    for task in pending:
        task.cancel()
    if pending:
        stats.error(f"connect phase timed out after {CONNECT_TIMEOUT_S} s: {len(pending)} pending")
        await asyncio.wait(pending, timeout=5)
    return [c for t in done if not t.cancelled() and (c := t.result()) is not None]


async def close_clients(clients: list[Client]) -> None:
    if clients:
        await asyncio.wait(
            [asyncio.create_task(c.close()) for c in clients], timeout=CLOSE_TIMEOUT_S
        )


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _ramp(gate: asyncio.Semaphore, slots: int, ramp_s: float) -> None:
    """Open `slots` turn slots evenly over `ramp_s` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(slots):
        await asyncio.sleep(max(0.0, start + i * ramp_s / slots - loop.time()))
        gate.release()


async def run_turns(
    url: str | list[str],
    connections: int,
    turns: int,
    concurrent: int | None = None,
    timeout_s: float = 300.0,
    ramp_s: float = 0.0,
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """N connections with a session each, then M turns each (at most `concurrent` in flight).

    With `ramp_s`, the first `concurrent` turns start evenly over that many seconds, then a
    turn starts whenever one ends: `concurrent` stream at any moment, out of step with each
    other as users are (started together, every stream's tokens would arrive in bursts).

    Phases: connect + create sessions, then `on_ready()` (awaited if it returns an
    awaitable), the timed turn phase, `on_done()` (connections still open), then close. The
    callbacks let a caller sample the server's CPU and memory around the turn phase alone.
    Several URLs (server processes sharing a store): sessions go round-robin over them.
    """
    stats = Stats()
    async with _session() as http:
        t0 = time.perf_counter()
        clients = await open_clients(http, url, connections, stats)
        t1 = time.perf_counter()
        try:
            if on_ready is not None:
                pending_ready = on_ready()
                if pending_ready is not None:
                    await pending_ready
            gate = asyncio.Semaphore(0 if ramp_s else concurrent) if concurrent else None
            stats.counting = True
            t2 = time.perf_counter()
            tasks = [asyncio.create_task(c.run(turns, gate)) for c in clients]
            if gate is not None and concurrent and ramp_s:
                tasks.append(asyncio.create_task(_ramp(gate, concurrent, ramp_s)))
            pending: set[asyncio.Task[None]] = set()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            t3 = time.perf_counter()
            stats.counting = False
            for task in pending:
                task.cancel()
            if pending:
                stats.error(f"turn phase timed out after {timeout_s} s: {len(pending)} pending")
                await asyncio.wait(pending, timeout=5)
            held = sum(1 for c in clients if not c.closed and not c.ws.closed)
            if on_done is not None:
                on_done()
        finally:
            await close_clients(clients)
    elapsed = max(t3 - t2, 1e-9)
    done = sum(stats.kinds.values())
    final = stats.kinds.get("agent.final_answer", 0)
    return {
        "connections": connections,
        "sessions": len(clients),
        "held": held,
        "turns_expected": connections * turns,
        "turns_done": done,
        "turns_ok": final,
        "turns_failed": connections * turns - final,
        "by_kind": dict(stats.kinds),
        "connect_s": round(t1 - t0, 3),
        "turn_s": round(elapsed, 3),
        "turns_per_s": round(done / elapsed, 2),
        "events": stats.events,
        "events_per_s": round(stats.events / elapsed, 1),
        "first_event_ms": _ms(stats.first),
        "final_ms": _ms(stats.final),
        "routing_ms": {
            **_ms([float(u) for u in stats.routing_us], 1e-3),
            "tokens": len(stats.routing_us),
        },
        "seq": {
            "gaps": stats.gaps,
            "duplicates": stats.duplicates,
            "out_of_order": stats.out_of_order,
            "missing": stats.missing_seq,
        },
        "errors": dict(stats.errors.most_common(5)),
    }


class _Watcher:
    """One connection of a routing pair: when each turn event (by seq) first arrived, and
    each stamped answer token's delay from the fake LLM's write."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.arrived: dict[int, float] = {}
        self.token_us: list[int] = []
        self.finals = 0
        self.resumed_seq: int | None = None  # its own agent.session_resumed (B only)
        self.changed = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    async def first(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        """Frames until one of `kinds` (the handshake, before the reader runs)."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            for _ in range(MAX_HANDSHAKE_FRAMES):
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed during handshake ({msg.type.name})")
                event = orjson.loads(msg.data)
                if event.get("event") in kinds:
                    return event
                if event.get("event") == "system.error":
                    raise ConnectionError(f"system.error: {event.get('content')}")
        raise ConnectionError(f"none of {kinds}")

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        for _ in range(MAX_FRAMES_PER_CONNECTION):
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            event = orjson.loads(msg.data)
            seq, kind = event.get("seq"), event.get("event")
            if not isinstance(seq, int) or kind in NOT_TURN:
                continue
            self.arrived.setdefault(seq, now)
            if kind == "agent.partial_answer":
                self.token_us += _token_delays_us(event.get("content"))
            elif kind in TERMINAL:
                self.finals += 1
                self.changed.set()
        self.changed.set()

    async def until_finals(self, count: int, deadline: float) -> bool:
        while self.finals < count and not self.ws.closed:
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return self.finals >= count

    async def close(self) -> None:
        await _close(self.ws, self.reader)


async def run_routing(
    urls: list[str], pairs: int, turns: int = 1, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Routing between server processes that share a store: `pairs` sessions, each watched
    by two connections of this process. A creates the session on urls[i mod n] and sends
    its messages, so its turns run there; B attaches to it with user.reconnect on
    urls[(i + 1) mod n], another process (with one URL, the same one). For every turn
    event both receive, B's arrival minus A's is the extra delay of a client on another
    process (`routing_ms`); the fake LLM's stamped answer tokens give each one's delay from
    the LLM's write (`token_a_ms`, `token_b_ms`). A's turns run `turns` in a row."""
    errors: Counter[str] = Counter()
    done: Counter[str] = Counter()
    watchers: list[tuple[_Watcher, _Watcher, str]] = []
    async with _session() as http:
        try:
            for i in range(pairs):
                try:
                    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                        a = _Watcher(await http.ws_connect(urls[i % len(urls)], **WS_OPTIONS))
                        await a.ws.send_str('{"event":"user.create_session"}')
                        created = await a.first(("agent.session_created",))
                        sid = created["session_id"]
                        b = _Watcher(await http.ws_connect(urls[(i + 1) % len(urls)], **WS_OPTIONS))
                        last = {"last_seq": created["seq"]}
                        message = {"event": "user.reconnect", "session_id": sid, "content": last}
                        await b.ws.send_str(orjson.dumps(message).decode())
                        resumed = await b.first(("agent.session_resumed",))
                        b.resumed_seq = resumed["seq"]
                except (TimeoutError, OSError, aiohttp.ClientError, ConnectionError) as exc:
                    errors[f"connect: {exc!r}"[:200]] += 1
                    continue
                a.start()
                b.start()
                watchers.append((a, b, sid))
            t0 = time.perf_counter()
            deadline = t0 + timeout_s

            async def drive(a: _Watcher, b: _Watcher, sid: str) -> None:
                message = {"event": "user.message", "session_id": sid, "content": QUESTION}
                text = orjson.dumps(message).decode()
                for turn in range(1, turns + 1):
                    await a.ws.send_str(text)
                    if not await a.until_finals(turn, deadline):
                        done["a_timeout"] += 1
                        return
                    if not await b.until_finals(turn, deadline):
                        done["b_timeout"] += 1
                        return
                    done["both_final"] += 1

            await asyncio.gather(*(drive(a, b, sid) for a, b, sid in watchers))
            elapsed = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(w.close() for pair in watchers for w in pair[:2]))
    delays: list[float] = []
    missed = 0
    for a, b, _ in watchers:
        for seq, at in a.arrived.items():
            if b.resumed_seq is not None and seq < b.resumed_seq:
                continue
            if seq in b.arrived:
                delays.append(b.arrived[seq] - at)
            else:
                missed += 1
    return {
        "pairs": len(watchers),
        "turns_expected": pairs * turns,
        "turns_ok": done["both_final"],
        "by_kind": dict(done),
        "turn_s": round(elapsed, 3),
        "events_compared": len(delays),
        "events_missed_by_b": missed,
        "routing_ms": _ms(delays),
        "token_a_ms": _ms([float(u) for a, _, _ in watchers for u in a.token_us], 1e-3),
        "token_b_ms": _ms([float(u) for _, b, _ in watchers for u in b.token_us], 1e-3),
        "errors": dict(errors.most_common(5)),
    }


async def hold_idle(
    url: str,
    connections: int,
    on_held: Callable[[dict[str, Any]], None] | None = None,
    release: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Opens N connections with a session each and keeps them open, reading, until
    `release` is set (or at once after `on_held(report)` when there is no `release`).

    Held = connected, session created, and still open after SETTLE_S: a server that
    accepts and then drops connections does not count them.
    """
    stats = Stats()
    async with _session() as http:
        t0 = time.perf_counter()
        clients = await open_clients(http, url, connections, stats)
        connect_s = time.perf_counter() - t0
        try:
            await asyncio.sleep(SETTLE_S)
            report = {
                "connections": connections,
                "sessions": len(clients),
                "held": sum(1 for c in clients if not c.closed and not c.ws.closed),
                "connect_s": round(connect_s, 3),
                "errors": dict(stats.errors.most_common(5)),
            }
            if on_held is not None:
                on_held(report)
            if release is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), HOLD_TIMEOUT_S)
        finally:
            await close_clients(clients)
    return report


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    raise_open_files()  # bench/run.py raises its own (its children inherit it)
    if args.idle:
        release = asyncio.Event()
        if args.hold_s > 0:
            asyncio.get_running_loop().call_later(args.hold_s, release.set)
        else:
            release.set()
        return await hold_idle(args.url, args.connections, release=release)
    return await run_turns(
        args.url,
        args.connections,
        args.turns,
        args.concurrent,
        timeout_s=args.timeout_s,
        ramp_s=args.ramp_s,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--concurrent", type=int, default=None, help="turns in flight, max")
    parser.add_argument("--compress", type=int, default=0, help="offer permessage-deflate")
    parser.add_argument(
        "--ramp-s", type=float, default=0.0, help="start the first --concurrent turns over this"
    )
    parser.add_argument("--idle", action="store_true", help="hold connections, no turns")
    parser.add_argument("--hold-s", type=float, default=0.0, help="with --idle: hold this long")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="turn phase bound")
    arguments = parser.parse_args()
    COMPRESS = arguments.compress
    print(orjson.dumps(asyncio.run(_main(arguments)), option=orjson.OPT_INDENT_2).decode())
