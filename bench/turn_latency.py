"""Measure turn latency on the offline model: time to first event and to the final answer.

    .venv/bin/python bench/turn_latency.py --connections 100 --turns 5

Starts the real app on a loopback port in this process, opens N aiohttp WebSocket clients,
each running T weather turns, and prints percentiles. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from myagent_ws.app import create_app
from myagent_ws.client import TERMINAL
from myagent_ws.loader import load_agent_files
from myagent_ws.registry import AgentRegistry
from myagent_ws.settings import Settings

WEATHER = Path(__file__).resolve().parents[1] / "examples" / "ws_weather_agent.py"
QUESTION = "北京今天天气怎么样？"


async def client(
    url: str, turns: int, first: list[float], total: list[float], counts: list[int]
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive()  # system.connected
        await ws.send_str(json.dumps({"event": "user.create_session"}))
        sid = json.loads((await ws.receive()).data)["session_id"]
        for _ in range(turns):
            start = time.perf_counter()
            await ws.send_str(
                json.dumps({"event": "user.message", "session_id": sid, "content": QUESTION})
            )
            seen = 0
            while True:
                event = json.loads((await ws.receive(timeout=30)).data)
                seen += 1
                if seen == 1:
                    first.append(time.perf_counter() - start)
                if event["event"] in TERMINAL:
                    total.append(time.perf_counter() - start)
                    counts.append(seen)
                    break


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main(connections: int, turns: int) -> None:
    registry = AgentRegistry()
    for spec in load_agent_files([str(WEATHER)]):
        registry.add(spec)
    app = create_app(Settings(host="127.0.0.1", port=0), registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    first: list[float] = []
    total: list[float] = []
    counts: list[int] = []
    started = time.perf_counter()
    async with asyncio.timeout(300):
        await asyncio.gather(
            *(
                client(f"ws://127.0.0.1:{port}/", turns, first, total, counts)
                for _ in range(connections)
            )
        )
    elapsed = time.perf_counter() - started
    await runner.cleanup()
    events = sum(counts)
    print(f"{connections} connections x {turns} turns = {len(total)} turns in {elapsed:.2f} s")
    print(f"time to first event: p50 {pct(first, 0.5):.2f} ms  p95 {pct(first, 0.95):.2f} ms")
    print(f"time to final event: p50 {pct(total, 0.5):.2f} ms  p95 {pct(total, 0.95):.2f} ms")
    print(
        f"events per turn: {statistics.mean(counts):.1f}; events/s overall: {events / elapsed:,.0f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.turns))
