"""The Python client (myagent_ws.client) against a bare aiohttp loop, and across cut links.

    .venv/bin/python bench/client_bench.py --url ws://127.0.0.1:8080/ --turns 200

Three phases on one server (the weather agent on the offline model, from bench/run.py):
1. raw: turns on one session over a bare aiohttp WebSocket (send, read until terminal);
2. client: the same turns with `session.ask()`, so the client's cost per turn shows;
3. cut: turns with `session.send()` through a proxy (bench/linkcut.py) that drops the link
   every `cut_every` events: every event must arrive once, in seq order, one terminal
   event per turn; the resume time is from the cut to the agent.session_resumed that
   answers the client's reconnect (backoff 20 ms and up, a new handshake, the replay).

The server must allow the raw loop's rate (bench/run.py starts it with a high
--rate-limit-per-s): a rate_limited answer would leave the raw loop waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import turn_latency
from bench.linkcut import LinkCutter
from myagent_ws.client import TERMINAL, Backoff, connect

CUT_EVERY = 25  # events between two cuts of the link
RECONNECT = Backoff(initial_s=0.02, max_s=0.5)
PHASE_TIMEOUT_S = 120.0


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def client_turns(url: str, turns: int) -> list[float]:
    times = []
    async with connect(url) as client:
        session = await client.create_session()
        for _ in range(turns):
            start = time.perf_counter()
            await session.ask(turn_latency.QUESTION)
            times.append(time.perf_counter() - start)
    return times


async def cut_turns(url: str, turns: int, cut_every: int) -> dict[str, Any]:
    """Turns through a proxy that drops the link every `cut_every` events."""
    cutter = LinkCutter(urlsplit(url).port or 80)
    port = await cutter.start()
    events = lost_or_repeated = bad_turns = 0
    resume: list[float] = []
    cut_at: float | None = None
    try:
        async with connect(f"ws://127.0.0.1:{port}/", backoff=RECONNECT) as client:
            session = await client.create_session()
            expected = session.last_seq + 1
            for _ in range(turns):
                terminals = 0
                async for event in session.send(turn_latency.QUESTION):
                    if cut_at is not None and event["event"] == "agent.session_resumed":
                        resume.append(time.perf_counter() - cut_at)
                        cut_at = None
                    lost_or_repeated += event["seq"] != expected
                    expected = event["seq"] + 1
                    terminals += event["event"] in TERMINAL
                    events += 1
                    if events % cut_every == 0:
                        cutter.cut()
                        cut_at = time.perf_counter()
                bad_turns += terminals != 1
            reconnects = client.reconnects
    finally:
        await cutter.close()
    return {
        "events": events,
        "cuts": events // cut_every,
        "reconnects": reconnects,
        "lost_or_repeated": lost_or_repeated,
        "turns_without_one_terminal": bad_turns,
        "resume_ms": _ms(resume) if resume else None,
    }


async def measure(url: str, turns: int, cut_turns_n: int, cut_every: int) -> dict[str, Any]:
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        raw: list[float] = []  # per-turn seconds over a bare aiohttp loop: the floor
        await turn_latency.client(url, turns, [], raw, [])
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        ours = await client_turns(url, turns)
    result = {"turns": turns, "raw_ms": _ms(raw), "client_ms": _ms(ours)}
    result["client_over_raw"] = round(statistics.median(ours) / statistics.median(raw), 3)
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        result["cut"] = await cut_turns(url, cut_turns_n, cut_every)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--cut-turns", type=int, default=100)
    parser.add_argument("--cut-every", type=int, default=CUT_EVERY)
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    result = asyncio.run(measure(args.url, args.turns, args.cut_turns, args.cut_every))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
