"""Fault injection: cut client connections at random points and check that replay loses,
duplicates and reorders nothing.

    .venv/bin/python bench/chaos.py --disconnects 1000

Starts the real app on a loopback port in this process (weather example agent, built-in
offline model), records a baseline of every turn on clean connections, then runs N
sessions whose clients abort their TCP connection right after user.message, between two
events of a live turn, during a replay, and between turns; they reconnect with `last_seq`
and reassemble each turn from every frame they received (never deduplicated). Bounded in
count and time; exits non-zero unless lost, duplicated and out-of-order are all 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
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
from myagent_ws.keys import SESSIONS
from myagent_ws.loader import load_agent_files
from myagent_ws.registry import AgentRegistry
from myagent_ws.sessions import SessionManager
from myagent_ws.settings import Settings

WEATHER = Path(__file__).resolve().parents[1] / "examples" / "ws_weather_agent.py"
TERMINAL = {"agent.final_answer", "agent.error", "agent.timeout", "agent.interrupted"}
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
    acks: list[int] = field(default_factory=lambda: [0, 0])  # sent, events trimmed by them
    gaps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # errors, server closes, bad resumes
    mismatch: str = ""  # the first turn that differs from its baseline

    @property
    def ok(self) -> bool:
        bad = self.lost or self.duplicated or self.out_of_order or self.stuck or self.problems
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

    def __init__(self, url: str, http: aiohttp.ClientSession, manager: SessionManager,
                 rng: random.Random, report: Report, skew: int = 0) -> None:  # fmt: skip
        self.url, self.http, self.manager, self.rng, self.report = url, http, manager, rng, report
        self.skew = skew  # reconnect from max_seq + skew: < 0 must show up as duplicates
        self.chaos = True
        self.sid = ""
        self.counts: Counter[int] = Counter()
        self.first: dict[int, Frame] = {}
        self.max_seq = 0
        self.texts: list[str] = []
        self.turn_frames = 0  # frames of the running turn received so far, on any link

    async def open(self) -> None:
        """A new connection: creates the session the first time, then reconnects."""
        ws = await self.http.ws_connect(self.url, heartbeat=None)
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
        if the budget allows, and reconnect from max_seq."""
        link, report, session = self.link, self.report, self.manager.sessions[self.sid]
        if report.disconnects >= report.target:
            link.cut_after = None
            return
        if link.replaying:
            kind = "mid_replay" if link.replayed else "after_reconnect"
        else:
            kind = ("mid_turn" if self.turn_frames else "at_send") if turn_open else "between_turns"
        report.disconnects += 1
        report.cuts[kind] += 1
        report.busy[0] += session.busy
        link.ws._conn.transport.abort()  # type: ignore[union-attr]
        await link.ws.close()  # frees the client's state; nothing reaches the server
        await asyncio.sleep(self.rng.choice((0, 0, 0.001, 0.003)))  # the turn runs on meanwhile
        report.busy[1] += session.busy
        await self.open()
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
            if link.replaying and md.get("replayed") != link.replayed:
                report.problems.append(
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

    async def run(self, deadline: float, max_turns: int) -> None:
        """Random turns until the disconnect target is met (without chaos: each of TEXTS
        once, in order); then take the tail and compare the last seq with the server's."""
        rng, report, chaos = self.rng, self.report, self.chaos
        await self.open()
        while not self.sid:
            ev = await self.receive(deadline)
            self.record(ev)
            self.sid = ev.get("session_id") or ""
        while len(self.texts) < max_turns and time.monotonic() < deadline:
            if chaos and report.disconnects >= report.target:
                break
            if chaos and rng.random() < 0.15:
                await self.cut(turn_open=False)
            await self.run_turn(rng.choice(TEXTS) if chaos else TEXTS[len(self.texts)], deadline)
        session = self.manager.sessions[self.sid]
        with contextlib.suppress(TimeoutError):  # the tail: a last session_resumed
            tail = min(deadline, time.monotonic() + 5)
            while self.max_seq < session.seq:
                self.record(await self.receive(tail))
        await self.link.ws.close()
        report.acks[1] += session.buffer.first_seq - 1
        if session.seq != self.max_seq:
            report.problems.append(f"{self.sid}: server at seq {session.seq}, got {self.max_seq}")

    async def run_turn(self, text: str, deadline: float) -> None:
        """One turn, cut at a random frame or not; done at its terminal event."""
        session, report = self.manager.sessions[self.sid], self.report
        before = session.turn
        self.texts.append(text)
        self.turn_frames = 0
        await self.send({"event": "user.message", "session_id": self.sid, "content": text})
        if self.chaos and self.rng.random() < 0.7:
            self.link.cut_after = self.rng.choice((0, 0, 1, 2, 3, 4, 5, 6, 8, 10))
            if self.link.cut_after == 0:
                # Cut before anything arrives, but once the server has the message: an abort
                # may drop unsent bytes, and a lost request is not a lost event.
                while session.turn is before and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)
                await self.cut(turn_open=True)
        while True:
            try:
                ev = await self.receive(deadline)
            except ConnectionError as exc:  # the server closed on us: resume, don't count it
                report.problems.append(f"{self.sid}: {exc}")
                await self.link.ws.close()
                await self.open()
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
    skew: int = 0,
) -> Report:  # fmt: skip
    """Run the server and `sessions` chaotic clients until `disconnects` forced cuts.
    `skew` < 0 makes clients reconnect from before their last seq: a check of the checker."""
    if skew > 0:
        raise ValueError("skew must be <= 0 (the server clamps last_seq to its newest seq)")
    report = Report(target=disconnects)
    registry = AgentRegistry()
    for spec in load_agent_files([str(WEATHER)]):
        registry.add(spec)
    # The offline model explicitly: OPENAI_API_KEY / OPENAI_BASE_URL in the env are ignored.
    app = create_app(Settings(host="127.0.0.1", port=0), registry, model=OfflineModel())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/"
    deadline = time.monotonic() + max_seconds
    try:
        async with aiohttp.ClientSession() as http:
            baseline: dict[str, list[Event]] = {}
            for _ in range(2):  # twice, in two sessions: the model must be deterministic
                client = Client(url, http, app[SESSIONS], random.Random(seed), report)
                client.chaos = False
                await client.run(deadline, len(TEXTS))
                llm = client.first[1]["metadata"]["llm"]
                assert llm.get("offline") and llm.get("model") == "offline", llm
                for text, events in zip(TEXTS, split_turns(client.first), strict=False):
                    if baseline.setdefault(text, normalise(events)) != normalise(events):
                        report.problems.append(f"the offline model is not deterministic: {text}")
            report.frames = 0  # count the chaos run's frames only
            clients = [Client(url, http, app[SESSIONS], random.Random(seed * 1000 + i), report,
                              skew) for i in range(sessions)]  # fmt: skip
            max_turns = 4 * disconnects // max(sessions, 1) + 50
            results = await asyncio.gather(
                *(asyncio.wait_for(c.run(deadline, max_turns), max_seconds + 15) for c in clients),
                return_exceptions=True,
            )
            for client, result in zip(clients, results, strict=True):
                if isinstance(result, BaseException):
                    report.stuck += 1
                    report.problems.append(f"{client.sid}: stopped: {result!r}")
                    # Its unfinished turn is the stuck one, reported so; not a lost event.
                    client.texts = client.texts[: len(split_turns(client.first)) - 1]
                client.check(baseline)
    finally:
        await runner.cleanup()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disconnects", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument(
        "--skew", type=int, default=0, help="reconnect from last_seq + SKEW (<= 0): to see "
        "the checks fail, -1 asks for one event already received on every reconnect",
    )  # fmt: skip
    a = parser.parse_args()
    started = time.perf_counter()
    r = asyncio.run(run_chaos(a.disconnects, sessions=a.sessions, seed=a.seed,
                              max_seconds=a.max_seconds, skew=a.skew))  # fmt: skip
    print(f"{a.sessions} sessions, seed {a.seed}, {time.perf_counter() - started:.1f} s")
    print("cuts: " + ", ".join(f"{k} {r.cuts[k]}" for k in CUT_KINDS))
    print(f"the server was still running the turn at {r.busy[0]} cuts, {r.busy[1]} reconnects")
    print(f"acks sent {r.acks[0]}, events trimmed from replay buffers by them {r.acks[1]}")
    print(f"frames received {r.frames}, out-of-order {r.out_of_order}, stuck {r.stuck}, "
          f"reported gaps {len(r.gaps)}")  # fmt: skip
    for line in [*r.gaps, *r.problems, r.mismatch][:10]:
        if line:
            print(f"  {line}")
    print(f"lost {r.lost}, duplicated {r.duplicated}, disconnects {r.disconnects}, "
          f"turns {r.turns}, events {r.events}")  # fmt: skip
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
