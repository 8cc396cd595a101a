"""Fault injection: cut client connections at random points and check that replay loses,
duplicates and reorders nothing.

    .venv/bin/python bench/chaos.py --disconnects 1000
    .venv/bin/python bench/chaos.py --nodes 3 --sessions 300 --disconnects 1000

Starts the real app on a loopback port in this process (weather example agent, built-in
offline model), records a baseline of every turn on clean connections, then runs N
sessions whose clients abort their TCP connection right after user.message, between two
events of a live turn, during a replay, and between turns; they reconnect with `last_seq`
and reassemble each turn from every frame they received (never deduplicated). Bounded in
count and time; exits non-zero unless lost, duplicated and out-of-order are all 0.

With `--nodes N` (N > 1) the server is N real `myagent-ws server` processes instead (same
agent, offline model, OPENAI_* and MYAGENT* stripped from their environment) on free
loopback ports, sharing the Redis store at `--store-url` under a fresh key prefix; each
session's client (one per session: `--sessions 300` is 300 clients) starts on node
i mod N, and every reconnect after a cut goes to a random other node (a hop). The
processes are stopped (SIGTERM, then SIGKILL after a bound) and the prefix's keys
deleted at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from myagent.offline import OfflineModel
from myagent_ws.app import create_app
from myagent_ws.client import TERMINAL
from myagent_ws.keys import SESSIONS
from myagent_ws.loader import load_agent_files
from myagent_ws.registry import AgentRegistry
from myagent_ws.sessions import SessionManager
from myagent_ws.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script: see run.py
from bench import multinode

WEATHER = Path(__file__).resolve().parents[1] / "examples" / "ws_weather_agent.py"
NOT_TURN = {"agent.session_created", "agent.session_resumed"}
TEXTS = [
    "北京今天天气怎么样？", "上海天气如何？", "东京今天天气怎么样？", "告诉我伦敦的基本信息",
    "What's the weather in London?", "What's the weather like in Paris today?",
    "How is the weather in Tokyo?", "Tell me about New York", "广州明天天气", "Weather in Shenzhen",
]  # fmt: skip
CUT_KINDS = ("at_send", "mid_turn", "after_reconnect", "mid_replay", "between_turns")
Event = tuple[str, str | None, str, str]
Frame = dict[str, Any]


@dataclass
class Report:
    """What one chaos run saw; `ok` is the pass criterion."""

    target: int = 0
    disconnects: int = 0
    turns: int = 0
    events: int = 0  # distinct session events received (seqs)
    frames: int = 0  # session frames received, duplicates included
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    stuck: int = 0  # sessions that stopped early (a turn that never ended, an exception)
    cuts: Counter[str] = field(default_factory=Counter)
    busy: list[int] = field(default_factory=lambda: [0, 0])  # turn running at cut, reconnect
    # Sent, events trimmed by them (None: not observable, with --nodes).
    acks: list[int | None] = field(default_factory=lambda: [0, 0])
    nodes: int = 1
    hops: int = 0  # reconnects that went to another node than the one cut
    opened: Counter[int] = field(default_factory=Counter)  # connections opened, per node
    node_log: list[str] = field(default_factory=list)  # the nodes' warnings and errors
    node_logdir: str = ""  # their output, kept when the run failed
    gaps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # errors, server closes, bad resumes
    # agent.session_resumed whose metadata.replayed is not the number of frames that came
    # before it on its connection (with several nodes: more than came; kept apart from
    # problems: no event is lost by it).
    miscounted: list[str] = field(default_factory=list)
    mismatch: str = ""  # the first turn that differs from its baseline
    # Set when the run is stopped (a signal): clients end at their next step.
    stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        bad = self.lost or self.duplicated or self.out_of_order or self.stuck or self.problems
        bad = bad or self.miscounted
        return not bad and self.disconnects >= self.target


def normalise(events: list[Frame]) -> list[Event]:
    """Comparable turn events: no timestamps, seqs or durations; tool-call ids (random per
    call) renumbered in order of appearance."""
    ids: dict[str, str] = {}
    out = []
    for ev in events:
        md = {k: v for k, v in (ev.get("metadata") or {}).items() if k != "duration_ms"}
        if "call_id" in md:
            md["call_id"] = ids.setdefault(md["call_id"], f"call#{len(ids) + 1}")
        step = ev.get("step_id") and ids.setdefault(ev["step_id"], f"call#{len(ids) + 1}")
        dump = json.dumps(ev.get("content"), ensure_ascii=False, sort_keys=True)
        out.append((ev["event"], step, dump, json.dumps(md, ensure_ascii=False, sort_keys=True)))
    return out


def split_turns(by_seq: dict[int, Frame]) -> list[list[Frame]]:
    """A session's events in seq order, split after each terminal event."""
    turns: list[list[Frame]] = [[]]
    for seq in sorted(by_seq):
        if by_seq[seq]["event"] not in NOT_TURN:
            turns[-1].append(by_seq[seq])
            if by_seq[seq]["event"] in TERMINAL:
                turns.append([])
    return turns


class InProcess:
    """What a client asks of the server besides the protocol, when the server runs in
    this process: its SessionManager answers."""

    settle_s = 0.0  # see InRedis

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    async def mark(self, sid: str) -> Any:
        """Something that changes once the server has taken a user.message."""
        return self.manager.sessions[sid].turn

    async def taken(self, sid: str, mark: Any) -> bool:
        return self.manager.sessions[sid].turn is not mark

    async def busy(self, sid: str) -> bool:
        return self.manager.sessions[sid].busy

    async def seq(self, sid: str) -> int:
        return self.manager.sessions[sid].seq

    async def trimmed(self, sid: str) -> int | None:
        """Events the session's replay buffer dropped because every reader acked them."""
        return self.manager.sessions[sid].buffer.first_seq - 1

    async def describe(self, sid: str) -> str:
        """The server's side of a session, for a report of one that got stuck."""
        session = self.manager.sessions.get(sid)
        if session is None:
            return "the server has no such session"
        first = session.buffer.first_seq
        return f"server: seq {session.seq}, busy {session.busy}, buffer from {first}"


class InRedis:
    """The same questions, when the server is several processes (--nodes): a client
    cannot see into them, but the session's state lives in the Redis store they share,
    read here, never written (redis_store.lua documents the record's fields). `seen` is
    set by the script that takes a user.message (begin), `turn` is there while a turn
    runs anywhere, `seq` is the session's newest seq. Acks trim only the replay buffer of
    the process the client is on, which forgets it when the client leaves, and the log in
    Redis is bounded by count and bytes, not by acks: that one has no equivalent."""

    # A user.reconnect sent just before a cut may still be in another process's hands when
    # the client is done: its session_resumed reaches the log a little later. The client
    # waits for this long a quiet spell before it compares its last seq with the server's.
    settle_s = 0.3

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def _key(self, sid: str) -> str:
        return f"{self.prefix}s:{sid}"

    async def mark(self, sid: str) -> Any:
        return await self.redis.hget(self._key(sid), "seen")

    async def taken(self, sid: str, mark: Any) -> bool:
        return await self.redis.hget(self._key(sid), "seen") != mark

    async def busy(self, sid: str) -> bool:
        return bool(await self.redis.hexists(self._key(sid), "turn"))

    async def seq(self, sid: str) -> int:
        return int(await self.redis.hget(self._key(sid), "seq") or 0)

    async def trimmed(self, sid: str) -> int | None:
        return None

    async def describe(self, sid: str) -> str:
        skip = {b"mem", b"pending_body", b"agent", b"owner", b"created"}
        record = await self.redis.hgetall(self._key(sid))
        fields = {k.decode(): v.decode() for k, v in record.items() if k not in skip}
        tail = await self.redis.xrevrange(self._key(sid) + ":log", count=3)
        last = [(i.decode(), f[b"e"].decode()) for i, f in reversed(tail)]
        return f"Redis record {fields}, last log entries {last}"

    async def events(self, sid: str, after: int) -> list[tuple[int, str]]:
        """(seq, event name) of the logged events after `after` (at most 5)."""
        entries = await self.redis.xrange(self._key(sid) + ":log", min=f"({after}-0", count=5)
        return [(int(i.split(b"-")[0]), f[b"e"].decode()) for i, f in entries]


View = InProcess | InRedis


class Link:
    """One WebSocket connection of a session, with what it has received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, last_seq: int | None) -> None:
        self.ws = ws
        self.top = 0  # highest seq on this connection
        self.last_seq = last_seq  # sent in user.reconnect
        self.replaying = last_seq is not None  # until our agent.session_resumed
        self.replayed = 0
        self.cut_after: int | None = None  # cut after this many more session frames


class Client:
    """One session: sends turns, cuts at random, reconnects from its highest seq, and
    records every session frame (no dedupe: duplicates are what we count)."""

    link: Link

    def __init__(self, urls: list[str], http: aiohttp.ClientSession, view: View,
                 rng: random.Random, report: Report, skew: int = 0,
                 node: int = 0) -> None:  # fmt: skip
        self.urls, self.http, self.view, self.rng, self.report = urls, http, view, rng, report
        self.node = node % len(urls)  # the node (index in urls) of the current connection
        self.skew = skew  # reconnect from max_seq + skew: < 0 must show up as duplicates
        self.chaos = True
        self.sid = ""
        self.counts: Counter[int] = Counter()
        self.first: dict[int, Frame] = {}
        self.max_seq = 0
        self.texts: list[str] = []
        self.turn_frames = 0  # frames of the running turn received so far, on any link
        self.trail: list[str] = []  # the last connections: node, how each ended

    async def open(self, hop: bool = False) -> None:
        """A new connection: creates the session the first time, then reconnects; with
        `hop` (after a cut), to a random other node when there are several."""
        if hop and len(self.urls) > 1:
            self.node = self.rng.choice([i for i in range(len(self.urls)) if i != self.node])
            self.report.hops += 1
        self.report.opened[self.node] += 1
        self.trail = [*self.trail[-7:], f"node {self.node} at {time.monotonic():.3f}"]
        ws = await self.http.ws_connect(self.urls[self.node], heartbeat=None)
        hello = json.loads((await ws.receive(timeout=10)).data)
        assert hello["event"] == "system.connected", hello
        self.link = Link(ws, max(self.max_seq + self.skew, 0) if self.sid else None)
        if not self.sid:
            await self.send({"event": "user.create_session"})
            return
        last = {"last_seq": self.link.last_seq}
        await self.send({"event": "user.reconnect", "session_id": self.sid, "content": last})

    async def send(self, message: Frame) -> None:
        await self.link.ws.send_str(json.dumps(message, ensure_ascii=False))

    async def cut(self, turn_open: bool) -> None:
        """Abort the connection like a pulled cable (ws.close() would be a clean close),
        if the budget allows, and reconnect from max_seq (on another node, if any)."""
        link, report, view = self.link, self.report, self.view
        if report.disconnects >= report.target or report.stop.is_set():
            link.cut_after = None
            return
        if link.replaying:
            kind = "mid_replay" if link.replayed else "after_reconnect"
        else:
            kind = ("mid_turn" if self.turn_frames else "at_send") if turn_open else "between_turns"
        report.disconnects += 1
        report.cuts[kind] += 1
        self.trail[-1] += f" cut {kind} ({self.link.replayed} replayed)"
        link.ws._conn.transport.abort()  # type: ignore[union-attr]
        report.busy[0] += await view.busy(self.sid)  # in this process: at once, no await
        await link.ws.close()  # frees the client's state; nothing reaches the server
        await asyncio.sleep(self.rng.choice((0, 0, 0.001, 0.003)))  # the turn runs on meanwhile
        report.busy[1] += await view.busy(self.sid)
        await self.open(hop=True)
        if self.rng.random() < 0.5:  # cut again during the replay (0: before it starts)
            self.link.cut_after = self.rng.choice((0, 1, 1, 2, 3, 5, 8))
            if self.link.cut_after == 0:
                await self.cut(turn_open)

    def record(self, ev: Frame) -> bool:
        """Note one frame; True if it is a terminal event seen for the first time."""
        link, report, seq = self.link, self.report, ev.get("seq")
        if seq is None:
            if ev["event"] in ("system.error", "system.notice"):
                report.problems.append(f"{self.sid}: {ev['event']} {ev.get('content')!r}")
            return False
        report.frames += 1
        report.out_of_order += seq <= link.top
        link.top = max(link.top, seq)
        self.counts[seq] += 1
        self.first.setdefault(seq, ev)
        self.max_seq = max(self.max_seq, seq)
        md = ev.get("metadata") or {}
        if "replay_gap" in md and self.counts[seq] == 1:
            report.gaps.append(f"{self.sid} seq {seq}: replay_gap {md['replay_gap']}")
        # An earlier reconnect's session_resumed (its link was cut) can be replayed here;
        # ours names our last_seq (an earlier one naming the same ends the same count).
        if ev["event"] == "agent.session_resumed" and md.get("last_seq") == link.last_seq:
            # replayed counts the stored events the reconnect found; with several nodes,
            # events a turn elsewhere appends meanwhile may also come first (live, in order).
            said = md.get("replayed")
            if link.replaying and (
                said > link.replayed if report.nodes > 1 else said != link.replayed
            ):
                report.miscounted.append(
                    f"{self.sid}: session_resumed seq {seq} says replayed {md.get('replayed')}, "
                    f"{link.replayed} frames came before it"
                )
            link.replaying = False
            return False
        link.replayed += link.replaying
        if ev["event"] in NOT_TURN:
            return False
        self.turn_frames += 1
        return ev["event"] in TERMINAL and self.counts[seq] == 1

    async def receive(self, deadline: float) -> Frame:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        msg = await self.link.ws.receive(timeout=min(left, 10.0))
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"unexpected {msg.type.name} frame ({msg.data!r})")
        return json.loads(msg.data)

    async def run(self, deadline: float, max_turns: int, delay: float = 0.0) -> None:
        """Random turns until the disconnect target is met (without chaos: each of TEXTS
        once, in order), starting after `delay` s; then take the tail and compare the last
        seq with the server's."""
        rng, report, chaos = self.rng, self.report, self.chaos
        if delay > 0:
            await asyncio.sleep(delay)
        await self.open()
        while not self.sid:
            ev = await self.receive(deadline)
            self.record(ev)
            self.sid = ev.get("session_id") or ""
        while len(self.texts) < max_turns and time.monotonic() < deadline:
            if report.stop.is_set():
                return
            if chaos and report.disconnects >= report.target:
                break
            if chaos and rng.random() < 0.15:
                await self.cut(turn_open=False)
            await self.run_turn(rng.choice(TEXTS) if chaos else TEXTS[len(self.texts)], deadline)
        view = self.view
        with contextlib.suppress(TimeoutError):  # the tail: a last session_resumed
            tail = min(deadline, time.monotonic() + 5)
            # Ours first: with --nodes it gets its seq in Redis after the replay is sent.
            while self.link.replaying:
                self.record(await self.receive(tail))
            while self.max_seq < await view.seq(self.sid):
                self.record(await self.receive(tail))
            for _ in range(1000 if view.settle_s else 0):  # until quiet and caught up
                try:
                    self.record(await self.receive(min(tail, time.monotonic() + view.settle_s)))
                except TimeoutError:
                    if time.monotonic() >= tail or self.max_seq >= await view.seq(self.sid):
                        break
        await self.link.ws.close()
        trimmed = await view.trimmed(self.sid)
        if trimmed is None or report.acks[1] is None:
            report.acks[1] = None
        else:
            report.acks[1] += trimmed
        server_seq = await view.seq(self.sid)
        if server_seq != self.max_seq:
            more = ""
            if isinstance(view, InRedis):
                more = f" (logged after it: {await view.events(self.sid, self.max_seq)})"
            report.problems.append(
                f"{self.sid}: server at seq {server_seq}, got {self.max_seq}{more}"
            )

    async def run_turn(self, text: str, deadline: float) -> None:
        """One turn, cut at a random frame or not; done at its terminal event."""
        view, report = self.view, self.report
        before = await view.mark(self.sid)
        self.texts.append(text)
        self.turn_frames = 0
        await self.send({"event": "user.message", "session_id": self.sid, "content": text})
        if self.chaos and self.rng.random() < 0.7:
            self.link.cut_after = self.rng.choice((0, 0, 1, 2, 3, 4, 5, 6, 8, 10))
            if self.link.cut_after == 0:
                # Cut before anything arrives, but once the server has the message: an abort
                # may drop unsent bytes, and a lost request is not a lost event. (A refused
                # one, system.error, never is: 10 s, then the turn shows up as stuck.)
                until = min(deadline, time.monotonic() + 10)
                while not await view.taken(self.sid, before) and time.monotonic() < until:  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)
                await self.cut(turn_open=True)
        while True:
            if report.stop.is_set():
                return
            try:
                ev = await self.receive(deadline)
            except ConnectionError as exc:  # the server closed on us: resume, don't count it
                if report.stop.is_set():
                    return
                report.problems.append(f"{self.sid}: {exc}")
                await self.link.ws.close()
                await self.open()  # on the same node: this was no cut
                continue
            link, done = self.link, self.record(ev)
            if ev.get("seq") and self.chaos and self.rng.random() < 0.1:
                report.acks[0] += 1
                last = {"last_seq": self.max_seq}
                await self.send({"event": "user.ack", "session_id": self.sid, "content": last})
            if done:
                link.cut_after = None
                return
            if link.cut_after is not None and ev.get("seq"):
                link.cut_after -= 1
                if link.cut_after <= 0:
                    await self.cut(turn_open=True)

    def state(self) -> str:
        """Where this client stands, for a report of one that got stuck."""
        link = getattr(self, "link", None)
        recent = [(s, self.first[s]["event"]) for s in sorted(self.first)[-3:]]
        where = f"on node {self.node}" if len(self.urls) > 1 else "connected"
        if link is None:
            return f"never {where}"
        return (
            f"{where}, turn {len(self.texts)} open with {self.turn_frames} frames, max seq "
            f"{self.max_seq}, link replaying {link.replaying} (last_seq {link.last_seq}, "
            f"replayed {link.replayed}, top {link.top}), last frames {recent}; its last "
            f"connections: {' -> '.join(self.trail)}"
        )

    def check(self, baseline: dict[str, list[Event]]) -> None:
        """Seqs: each of 1..last exactly once. Turns: reassembled in seq order, equal to
        the baseline of their text. A missing event counts once (the larger of the two)."""
        report = self.report
        seq_lost = sum(1 for s in range(1, self.max_seq + 1) if s not in self.counts)
        turns, missing, extra = split_turns(self.first), 0, 0
        for i, text in enumerate(self.texts):
            got, want = normalise(turns[i]) if i < len(turns) else [], baseline[text]
            if got != want:
                gone, more = Counter(want) - Counter(got), Counter(got) - Counter(want)
                missing, extra = missing + sum(gone.values()), extra + sum(more.values())
                report.out_of_order += not gone and not more
                report.mismatch = report.mismatch or (
                    f"{self.sid} turn {i + 1} {text!r}: missing {list(gone)} extra {list(more)}"
                )
        report.turns += len(self.texts)
        report.events += len(self.counts)
        report.lost += max(seq_lost, missing)
        report.duplicated += sum(n - 1 for n in self.counts.values()) + extra


async def run_chaos(
    disconnects: int, *, sessions: int = 8, seed: int = 1, max_seconds: float = 600.0,
    skew: int = 0, nodes: int = 1, store_url: str = multinode.REDIS_URL,
    ramp_s: float = 0.0,
) -> Report:  # fmt: skip
    """Run the server and `sessions` chaotic clients until `disconnects` forced cuts.
    `skew` < 0 makes clients reconnect from before their last seq: a check of the checker.
    `nodes` > 1: that many server processes on the Redis store at `store_url`, and every
    reconnect after a cut goes to another one. The clients start evenly over `ramp_s`
    seconds (default: all at once)."""
    if skew > 0:
        raise ValueError("skew must be <= 0 (the server clamps last_seq to its newest seq)")
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    report = Report(target=disconnects, nodes=nodes)
    runner: web.AppRunner | None = None
    cluster: multinode.NodeSet | None = None
    redis: Any = None
    try:
        if nodes == 1:
            registry = AgentRegistry()
            for spec in load_agent_files([str(WEATHER)]):
                registry.add(spec)
            # The offline model explicitly: OPENAI_API_KEY / OPENAI_BASE_URL are ignored.
            # Every client is on 127.0.0.1: no per-IP connection limit.
            settings = Settings(host="127.0.0.1", port=0, max_connections_per_ip=0)
            app = create_app(settings, registry, model=OfflineModel())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            urls = [f"ws://127.0.0.1:{runner.addresses[0][1]}/"]
            view: View = InProcess(app[SESSIONS])
        else:
            from redis import asyncio as aioredis

            # --drain-timeout-s 0: at the end nothing runs, and a stop should not wait.
            args = [str(WEATHER), "--drain-timeout-s", "0", "--max-connections-per-ip", "0"]
            cluster = multinode.NodeSet(nodes, args, store_url=store_url)
            await cluster.start()
            urls = cluster.urls
            # A pool that waits for a free connection (redis-py's default one fails past
            # 100 calls in flight, and 300 clients can have more).
            pool = aioredis.BlockingConnectionPool.from_url(store_url, max_connections=32)
            redis = aioredis.Redis(connection_pool=pool)
            view = InRedis(redis, cluster.prefix)
        deadline = time.monotonic() + max_seconds
        # No connection limit: one open WebSocket per client holds a connector slot.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            baseline: dict[str, list[Event]] = {}
            for i in range(2):  # twice, in two sessions (on two nodes): deterministic model
                client = Client(urls, http, view, random.Random(seed), report, node=i)
                client.chaos = False
                await client.run(deadline, len(TEXTS))
                llm = client.first[1]["metadata"]["llm"]
                assert llm.get("offline") and llm.get("model") == "offline", llm
                for text, events in zip(TEXTS, split_turns(client.first), strict=False):
                    if baseline.setdefault(text, normalise(events)) != normalise(events):
                        report.problems.append(f"the offline model is not deterministic: {text}")
            report.frames = 0  # count the chaos run's frames only
            report.hops, report.opened = 0, Counter()
            clients = [Client(urls, http, view, random.Random(seed * 1000 + i), report, skew,
                              node=i) for i in range(sessions)]  # fmt: skip
            max_turns = 4 * disconnects // max(sessions, 1) + 50
            step = ramp_s / max(sessions, 1)
            tasks = [asyncio.create_task(asyncio.wait_for(
                c.run(deadline, max_turns, i * step), max_seconds + 15,
            )) for i, c in enumerate(clients)]  # fmt: skip
            try:
                if tasks:
                    await asyncio.wait(tasks)
            except asyncio.CancelledError:
                # Stopped by a signal: the clients end at their next step (cancelling alone
                # is not enough: Python 3.11's wait_for can swallow a cancellation).
                report.stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=5)
                raise
            results = [_outcome(task) for task in tasks]
            for client, result in zip(clients, results, strict=True):
                if isinstance(result, BaseException):
                    report.stuck += 1
                    report.problems.append(f"{client.sid}: stopped: {result!r}; {client.state()}")
                    with contextlib.suppress(Exception):
                        report.problems.append(f"{client.sid}: {await view.describe(client.sid)}")
                    # Its unfinished turn is the stuck one, reported so; not a lost event.
                    client.texts = client.texts[: len(split_turns(client.first)) - 1]
                client.check(baseline)
    finally:
        if redis is not None:
            await redis.aclose()
            await redis.connection_pool.disconnect()
        if cluster is not None:
            report.node_log = cluster.log_lines()
            await cluster.stop()
            if report.ok:
                shutil.rmtree(cluster.logdir, ignore_errors=True)
            else:
                report.node_logdir = str(cluster.logdir)
        if runner is not None:
            await runner.cleanup()
    return report


def _outcome(task: asyncio.Task[Any]) -> BaseException | None:
    """What a finished client task ended with: an exception, or None."""
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


async def _until_signal(run: Any) -> Report:
    """`run`, cancelled by SIGTERM or SIGINT (even where a shell started us ignoring it), so
    that run_chaos's cleanup runs in order: clients closed, nodes stopped, keys deleted."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disconnects", type=int, default=1000)
    parser.add_argument(
        "--sessions", type=int, default=8, help="sessions, one client each (with --nodes, "
        "spread over the nodes: client i starts on node i mod N)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument(
        "--skew", type=int, default=0, help="reconnect from last_seq + SKEW (<= 0): to see "
        "the checks fail, -1 asks for one event already received on every reconnect",
    )  # fmt: skip
    parser.add_argument(
        "--nodes", type=int, default=1, help="1: the app in this process (memory store); "
        "N > 1: N server processes sharing Redis, every reconnect on another node",
    )  # fmt: skip
    parser.add_argument(
        "--ramp-s", type=float, default=0.0, help="start the clients evenly over this many "
        "seconds (default: all at once)",
    )  # fmt: skip
    parser.add_argument(
        "--store-url", default=multinode.REDIS_URL, help="the Redis for --nodes > 1 "
        "(loopback only; the run uses a fresh key prefix and deletes it at the end)",
    )  # fmt: skip
    a = parser.parse_args()
    if a.nodes < 1:
        parser.error("--nodes must be >= 1")
    if a.nodes > 1:
        try:
            multinode.loopback_redis(a.store_url)
        except ValueError as exc:
            parser.error(str(exc))
        if not multinode.redis_ping(a.store_url):
            print(
                f"--nodes {a.nodes} needs a Redis: none answers at {a.store_url}", file=sys.stderr
            )
            return 2
    started = time.perf_counter()
    try:
        r = asyncio.run(_until_signal(run_chaos(
            a.disconnects, sessions=a.sessions, seed=a.seed, max_seconds=a.max_seconds,
            skew=a.skew, nodes=a.nodes, store_url=a.store_url, ramp_s=a.ramp_s,
        )))  # fmt: skip
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: stopped", file=sys.stderr)
        return 130
    finally:
        multinode.NodeSet.stop_all_now()  # a last resort: run_chaos stops its own nodes
    where = f"{a.nodes} nodes on Redis" if a.nodes > 1 else "1 process (memory store)"
    print(f"{a.sessions} sessions, {where}, seed {a.seed}, "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    print("cuts: " + ", ".join(f"{k} {r.cuts[k]}" for k in CUT_KINDS))
    if a.nodes > 1:
        per_node = ", ".join(f"node {i} {r.opened[i]}" for i in range(a.nodes))
        print(f"node hops {r.hops} (every reconnect after a cut); connections opened: {per_node}")
    print(f"the server was still running the turn at {r.busy[0]} cuts, {r.busy[1]} reconnects")
    trimmed = "n/a (per process, not observable)" if r.acks[1] is None else r.acks[1]
    print(f"acks sent {r.acks[0]}, events trimmed from replay buffers by them {trimmed}")
    print(f"frames received {r.frames}, out-of-order {r.out_of_order}, stuck {r.stuck}, "
          f"reported gaps {len(r.gaps)}")  # fmt: skip
    for line in [*r.gaps, *r.problems, r.mismatch][:10]:
        if line:
            print(f"  {line}")
    if r.miscounted:
        print(f"agent.session_resumed with a wrong metadata.replayed: {len(r.miscounted)}, e.g.:")
        for line in r.miscounted[:5]:
            print(f"  {line}")
    if r.node_log:
        print(f"the nodes logged {len(r.node_log)} warnings or errors, e.g.:")
        for line in r.node_log[:10]:
            print(f"  {line[:300]}")
    if r.node_logdir:
        print(f"the nodes' output is kept in {r.node_logdir}")
    print(f"lost {r.lost}, duplicated {r.duplicated}, disconnects {r.disconnects}, "
          f"turns {r.turns}, events {r.events}")  # fmt: skip
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
