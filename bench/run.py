"""`make bench`: myagent-ws against the bare aiohttp reference server, same machine, same run.

    .venv/bin/python bench/run.py                      # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick --check      # seconds-scale CI guard

Each (scenario, server) pair gets fresh processes on loopback: the server (and a fresh fake
LLM when the scenario needs one), driven by bench/load.py from this process. The servers are
black boxes; their CPU (utime+stime) and memory (VmRSS) come from /proc, sampled around the
turn phase only. Ratios are ours / reference, so the machine's speed cancels out.

Then "Redis store: 1 vs 3 nodes" (bench/multinode.py): turns/s with sessions round-robin
over 1 and over 3 server processes sharing the Redis at --store-url (a fresh key prefix,
deleted afterwards), the routing delay to a client attached to another process, and the
Redis commands a turn costs (INFO commandstats). Skipped when no Redis answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load
import multinode
import serving  # bench/ is not a package: found through sys.path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
SERVERS = ("reference", "myagent-ws")
SCENARIOS = ("offline", "instant", "realistic", "idle")
SECTIONS = (*SCENARIOS, "redis")  # what --only may name
UPSTREAM_TURNS_PER_S = 36  # the upstream project, measured on this machine
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY = re.compile(rb"^READY (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; --quick shrinks all of them to seconds."""

    sessions: int = 1000
    turns: int = 3
    # Our offline model answers the weather question in 7 partial_answer events (12 events
    # a turn); the reference sends as many, so per-event and per-turn costs compare alike.
    offline_tokens: int = 7
    # Instant mode measures cost per turn: 40 answer tokens (not the fake's 200) keep
    # 3,000 turns within the run's few minutes.
    instant_tokens: int = 40
    realistic_sessions: int = 1000
    in_flight: int = 200
    ttft_ms: int = 300
    tokens_per_s: int = 30
    answer_tokens: int = 200
    idle_connections: int = 10000
    phase_timeout_s: float = 300.0
    # Redis store, 1 vs 3 nodes: the turn phase (offline model), then the routing pairs.
    redis_sessions: int = 90
    redis_turns: int = 40
    redis_idle_s: float = 3.0
    redis_pairs: int = 60
    redis_pair_turns: int = 2
    redis_answer_tokens: int = 60
    redis_monitor_turns: int = 3  # per session, under MONITOR (1 node)


FULL = Sizes()
QUICK = Sizes(
    sessions=200,
    turns=2,
    realistic_sessions=100,
    in_flight=20,
    ttft_ms=100,
    answer_tokens=40,
    idle_connections=500,
    phase_timeout_s=60.0,
    redis_sessions=30,
    redis_turns=5,
    redis_idle_s=1.0,
    redis_pairs=10,
    redis_pair_turns=1,
    redis_answer_tokens=20,
    redis_monitor_turns=2,
)


# ---------------------------------------------------------------- child processes


class Child:
    """A subprocess with its output in a log file (a pipe nobody drains would block it)."""

    live: list[Child] = []

    def __init__(
        self, name: str, argv: list[str], logdir: Path, cpus: set[int] | None = None
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MYAGENT"))}
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        if cpus is not None:
            os.sched_setaffinity(self.proc.pid, cpus)
        Child.live.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        return ""

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    async def ready_port(self) -> int:
        """The port from the `READY <port>` line the bench helpers print."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            match = READY.search(self.log_path.read_bytes())
            if match:
                return int(match.group(1))
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} printed no READY in {START_TIMEOUT_S} s:\n{self.tail()}")

    async def healthy(self, port: int) -> None:
        """Our server prints a banner, not READY: wait for GET /health to answer 200."""
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"http://127.0.0.1:{port}/health"
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name}: no /health 200 in {START_TIMEOUT_S} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; safe to call twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(STOP_TIMEOUT_S)
        self._log.close()
        with contextlib.suppress(ValueError):
            Child.live.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for child in reversed(list(cls.live)):
            child.stop()


# The server under test gets a core of its own; the fake LLM and the load client (this
# process) share the other. Without pinning, the scheduler moves them around and both
# servers' latency percentiles mostly measure that.
_PIN = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
# Every CPU, taken before main() pins this process (its children would inherit that): the
# Redis section's nodes get them all.
ALL_CPUS: set[int] | None = set(os.sched_getaffinity(0)) if _PIN else None
SERVER_CPUS: set[int] | None = {min(os.sched_getaffinity(0))} if _PIN else None
LOAD_CPUS: set[int] | None = set(os.sched_getaffinity(0)) - SERVER_CPUS if _PIN else None


# All three programs run on the same event loop: asyncio's (what a plain install serves
# on) unless --uvloop.
UVLOOP = False


def _loop_flag() -> list[str]:
    return ["--uvloop"] if UVLOOP else []


def pinning() -> str:
    """How processes are placed on CPUs, for the report."""
    if SERVER_CPUS is None or LOAD_CPUS is None:
        return "not pinned (fewer than 2 CPUs)"
    return (
        f"server on CPU {sorted(SERVER_CPUS)}, fake LLM and load client on CPUs {sorted(LOAD_CPUS)}"
    )


def free_port() -> int:
    """Our server wants a fixed --port: let the kernel pick a free one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """All CPUs' busy time (not idle, not iowait), in seconds, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def start_fake(mode: str, sizes: Sizes, logdir: Path, tag: str) -> tuple[Child, str]:
    argv = [PYTHON, "bench/fake_llm.py", "--port", "0", "--mode", mode]
    if mode == "realistic":
        argv += ["--ttft-ms", str(sizes.ttft_ms), "--tokens-per-s", str(sizes.tokens_per_s)]
        argv += ["--answer-tokens", str(sizes.answer_tokens)]
    else:
        argv += ["--answer-tokens", str(sizes.instant_tokens)]
    fake = Child(f"{tag}-fake", argv + _loop_flag(), logdir, LOAD_CPUS)
    port = await fake.ready_port()
    return fake, f"http://127.0.0.1:{port}/v1"


async def start_server(
    server: str, llm_url: str | None, sizes: Sizes, logdir: Path, tag: str
) -> tuple[Child, str]:
    if server == "reference":
        argv = [PYTHON, "bench/reference_server.py", "--port", "0"]
        if llm_url:
            argv += ["--llm-url", llm_url]
        else:
            argv += ["--offline-tokens", str(sizes.offline_tokens)]
        child = Child(f"{tag}-server", argv + _loop_flag(), logdir, SERVER_CPUS)
        port = await child.ready_port()
    else:
        port = free_port()
        argv = [PYTHON, "-m", "myagent_ws", "server", "examples/ws_weather_agent.py"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        argv += ["--event-loop", "uvloop" if UVLOOP else "asyncio"]
        argv += ["--drain-timeout-s", "0"]  # a stopped phase stops at once, like the reference
        if llm_url:
            argv += ["--llm-base-url", llm_url, "--model", "fake", "--llm-api-key", "bench"]
        child = Child(f"{tag}-server", argv, logdir, SERVER_CPUS)
        await child.healthy(port)
    return child, f"ws://127.0.0.1:{port}/"


# ---------------------------------------------------------------- one (scenario, server) run


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


async def run_case(scenario: str, server: str, sizes: Sizes, logdir: Path) -> dict[str, Any]:
    """Fresh processes, one load phase, the server's CPU and RSS around it."""
    tag = f"{scenario}-{server}"
    started = time.perf_counter()
    children: list[Child] = []
    try:
        llm_url, fake_pid = None, None
        if scenario in ("instant", "realistic"):
            fake, llm_url = await start_fake(scenario, sizes, logdir, tag)
            children.append(fake)
            fake_pid = fake.pid
        srv, url = await start_server(server, llm_url, sizes, logdir, tag)
        children.append(srv)
        pid = srv.pid
        marks: dict[str, float] = {"rss0": rss_bytes(pid)}

        def sample(n: int) -> None:
            # The other processes tell whether the client, the fake or the machine's
            # other load (not the server) limited a run.
            marks[f"cpu{n}"] = cpu_s(pid)
            marks[f"client{n}"] = own_cpu_s()
            marks[f"fake{n}"] = cpu_s(fake_pid) if fake_pid else 0.0
            marks[f"busy{n}"] = machine_busy_s()

        def ready() -> None:
            sample(0)

        def done() -> None:
            sample(1)
            marks["rss1"] = rss_bytes(pid)

        if scenario == "idle":
            res = await load.hold_idle(
                url, sizes.idle_connections, on_held=lambda _: done(), release=None
            )
        else:
            sessions = sizes.sessions if scenario != "realistic" else sizes.realistic_sessions
            turns = sizes.turns if scenario != "realistic" else 1
            res = await load.run_turns(
                url,
                sessions,
                turns,
                sizes.in_flight if scenario == "realistic" else None,
                timeout_s=sizes.phase_timeout_s,
                ramp_s=turn_length_s(sizes) if scenario == "realistic" else 0.0,
                on_ready=ready,
                on_done=done,
            )
        res["alive"] = srv.proc.poll() is None
    finally:
        for child in reversed(children):
            child.stop()
    cpu_ms = (marks["cpu1"] - marks["cpu0"]) * 1000 if "cpu0" in marks else None
    held = res.get("held", 0)
    if cpu_ms is not None and res.get("turn_s"):
        pct = {
            k: round((marks[f"{k}1"] - marks[f"{k}0"]) * 100 / res["turn_s"], 1)
            for k in ("cpu", "client", "fake", "busy")
        }
        res["server_cpu_pct"] = pct["cpu"]
        res["client_cpu_pct"] = pct["client"]
        res["fake_cpu_pct"] = pct["fake"] if fake_pid else None
        other = pct["busy"] - pct["cpu"] - pct["client"] - pct["fake"]
        res["other_cpu_pct"] = round(max(0.0, other), 1)
    res.update(
        server=server,
        scenario=scenario,
        wall_s=round(time.perf_counter() - started, 1),
        cpu_ms=cpu_ms,
        cpu_ms_per_turn=_div(cpu_ms, res.get("turns_done")),
        cpu_ms_per_event=_div(cpu_ms, res.get("events")),
        cpu_ms_per_token=_div(cpu_ms, (res.get("routing_ms") or {}).get("tokens")),
        rss_before_mb=marks["rss0"] / 2**20,
        rss_kb_per_session=_div((marks.get("rss1", 0) - marks["rss0"]) / 1024, held),
        seq_errors=sum((res.get("seq") or {}).values()),
    )
    return res


# ---------------------------------------------------------------- Redis store: 1 vs 3 nodes


REDIS_NODES = (1, 3)
# A server process's Redis client is redis-py's default pool: 100 connections, and a call
# past them fails at once ("Too many connections") instead of waiting. More sessions than
# that running turns on one process make its store calls fail (a server bug, reported), so
# the turn phase keeps under it: 1 node must take every session.
REDIS_MAX_SESSIONS_PER_NODE = 90
# Our own questions to Redis, not the servers' commands.
BENCH_COMMANDS = {"info"}


def _node_args(llm_url: str | None = None) -> list[str]:
    args = [multinode.WEATHER, "--event-loop", "uvloop" if UVLOOP else "asyncio"]
    args += ["--drain-timeout-s", "0"]
    if llm_url:
        args += ["--llm-base-url", llm_url, "--model", "fake", "--llm-api-key", "bench"]
    return args


def _ops(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in BENCH_COMMANDS and after[k] > before.get(k, 0)
    }


async def run_redis_turns(count: int, sizes: Sizes, logdir: Path, store_url: str) -> dict[str, Any]:
    """`count` server processes on the Redis store (offline model), sessions round-robin
    over them, each running turns in a row. Around the turn phase: the processes' CPU,
    Redis's CPU and its command counts, and, before it, the same counts over an idle
    window with every session connected (the processes' own loops: lease, watch, tail,
    reap), so the counts per turn are net of them. With one node, then a smaller phase
    under Redis MONITOR tells the node's round trips from its scripts' commands."""
    started = time.perf_counter()
    probe = multinode.RedisProbe(store_url)
    marks: dict[str, Any] = {}
    try:
        async with multinode.NodeSet(
            count, _node_args(), store_url=store_url, logdir=logdir / f"redis-{count}n-turns",
            cpus=ALL_CPUS, python=PYTHON,
        ) as nodes:  # fmt: skip
            pids = [node.pid for node in nodes.nodes]

            def sample(n: int) -> None:
                marks[f"cpu{n}"] = sum(cpu_s(pid) for pid in pids)
                marks[f"client{n}"] = own_cpu_s()
                marks[f"redis{n}"] = probe.cpu_s()
                marks[f"busy{n}"] = machine_busy_s()

            async def ready() -> None:
                marks["ops0"], marks["t0"] = probe.commands(), time.perf_counter()
                await asyncio.sleep(sizes.redis_idle_s)
                marks["ops1"], marks["t1"] = probe.commands(), time.perf_counter()
                sample(0)

            def done() -> None:
                sample(1)
                marks["ops2"], marks["t2"] = probe.commands(), time.perf_counter()

            res = await load.run_turns(
                nodes.urls, sizes.redis_sessions, sizes.redis_turns,
                timeout_s=sizes.phase_timeout_s, on_ready=ready, on_done=done,
            )  # fmt: skip
            if count == 1 and sizes.redis_monitor_turns:
                res["monitor"] = await monitored_turns(nodes, sizes, store_url)
            res["alive"] = all(node.alive() for node in nodes.nodes)
            res["node_log"] = nodes.log_lines()[:5]
    finally:
        probe.close()
    res.update(nodes=count, wall_s=round(time.perf_counter() - started, 1))
    turns = res.get("turns_done") or 0
    if "ops2" in marks and turns:
        idle = _ops(marks["ops1"], marks["ops0"])
        busy = _ops(marks["ops2"], marks["ops1"])
        idle_s, busy_s = marks["t1"] - marks["t0"], marks["t2"] - marks["t1"]
        res["background_per_s"] = {k: v / idle_s for k, v in idle.items()}
        res["ops_per_turn"] = {
            k: max(0.0, (v - idle.get(k, 0) * busy_s / idle_s) / turns) for k, v in busy.items()
        }
        res["commands_per_turn"] = sum(res["ops_per_turn"].values())
    if "cpu1" in marks and res.get("turn_s"):
        cpu_ms = (marks["cpu1"] - marks["cpu0"]) * 1000
        redis_ms = (marks["redis1"] - marks["redis0"]) * 1000
        pct = {
            k: round((marks[f"{k}1"] - marks[f"{k}0"]) * 100 / res["turn_s"], 1)
            for k in ("cpu", "client", "redis", "busy")
        }
        res.update(
            cpu_ms=cpu_ms,
            cpu_ms_per_turn=_div(cpu_ms, turns),
            redis_cpu_ms_per_turn=_div(redis_ms, turns),
            server_cpu_pct=pct["cpu"],
            redis_cpu_pct=pct["redis"],
            client_cpu_pct=pct["client"],
            other_cpu_pct=round(
                max(0.0, pct["busy"] - pct["cpu"] - pct["client"] - pct["redis"]), 1
            ),
        )
    res["seq_errors"] = sum((res.get("seq") or {}).values())
    return res


async def monitored_turns(nodes: multinode.NodeSet, sizes: Sizes, store_url: str) -> dict[str, Any]:
    """A small turn phase on `nodes` under Redis MONITOR: per turn, the commands the nodes
    sent (round trips; a pipeline's commands count one each) and those their scripts ran,
    both net of an idle window's background."""
    monitor = multinode.Monitor(store_url, nodes.prefix)
    monitor.start()
    lines: list[Any] = []
    try:

        async def ready() -> None:
            monitor.mark("idle")
            await asyncio.sleep(sizes.redis_idle_s)
            monitor.mark("turns")

        res = await load.run_turns(
            nodes.urls, sizes.redis_sessions, sizes.redis_monitor_turns,
            timeout_s=sizes.phase_timeout_s, on_ready=ready, on_done=lambda: monitor.mark("end"),
        )  # fmt: skip
    finally:
        lines = monitor.stop()
    turns = res.get("turns_done") or 0
    idle_trips, idle_scripted, idle_s = monitor.split(lines, "idle", "turns")
    trips, scripted, busy_s = monitor.split(lines, "turns", "end")

    def net(busy: dict[str, int], idle: dict[str, int]) -> dict[str, float]:
        return {
            k: max(0.0, (v - idle.get(k, 0) * busy_s / idle_s) / turns) for k, v in busy.items()
        }

    return {
        "turns": turns,
        "turns_ok": res.get("turns_ok"),
        "lines": len(lines),
        "trips_per_turn": net(trips, idle_trips) if turns else {},
        "scripted_per_turn": net(scripted, idle_scripted) if turns else {},
    }


async def run_redis_routing(
    count: int, sizes: Sizes, logdir: Path, store_url: str
) -> dict[str, Any]:
    """`count` server processes on the Redis store, on the fake LLM at a realistic pace:
    pairs of clients per session, one on the process running its turns, one attached to
    another process (the same one, with one node); see load.run_routing."""
    started = time.perf_counter()
    children: list[Child] = []
    paced = replace(sizes, ttft_ms=100, answer_tokens=sizes.redis_answer_tokens)
    try:
        fake, llm_url = await start_fake("realistic", paced, logdir, f"redis-{count}n")
        children.append(fake)
        async with multinode.NodeSet(
            count, _node_args(llm_url), store_url=store_url,
            logdir=logdir / f"redis-{count}n-routing", cpus=ALL_CPUS, python=PYTHON,
        ) as nodes:  # fmt: skip
            res = await load.run_routing(
                nodes.urls, sizes.redis_pairs, sizes.redis_pair_turns, sizes.phase_timeout_s
            )
            res["alive"] = all(node.alive() for node in nodes.nodes)
            res["node_log"] = nodes.log_lines()[:5]
    finally:
        for child in reversed(children):
            child.stop()
    res.update(nodes=count, wall_s=round(time.perf_counter() - started, 1))
    return res


async def run_redis(sizes: Sizes, logdir: Path, store_url: str) -> dict[str, Any]:
    """The "Redis store: 1 vs 3 nodes" section: {count: {"turns": ..., "routing": ...}},
    or {"skipped": why}."""
    if not multinode.redis_ping(store_url):
        return {"skipped": f"no Redis answers at {store_url}"}
    out: dict[str, Any] = {}
    for count in REDIS_NODES:
        out[count] = {}
        for phase, run in (("turns", run_redis_turns), ("routing", run_redis_routing)):
            print(f"-- redis / {count} node(s) / {phase} ...", file=sys.stderr, flush=True)
            try:
                res = await run(count, sizes, logdir, store_url)
            except Exception as exc:  # report it and go on
                print(f"   FAILED: {exc}", file=sys.stderr, flush=True)
                error = f"{type(exc).__name__}: {exc}"[:300]
                res = {"error": error, "errors": {error: 1}, "alive": False, "wall_s": 0.0}
            out[count][phase] = res
            print(f"   done in {res['wall_s']} s", file=sys.stderr, flush=True)
    return out


def _t(key: str, sub: str | None = None) -> Callable[[dict[str, Any]], Any]:
    """A getter of the turn phase's `key` (its `sub` entry)."""
    return lambda case: _get(case.get("turns"), key, sub)


def _r(key: str, sub: str | None = None) -> Callable[[dict[str, Any]], Any]:
    """A getter of the routing phase's `key` (its `sub` entry)."""
    return lambda case: _get(case.get("routing"), key, sub)


def _get(phase: dict[str, Any] | None, key: str, sub: str | None) -> Any:
    value = (phase or {}).get(key)
    return (value or {}).get(sub) if sub is not None else value


def _turns_ok(case: dict[str, Any]) -> str | None:
    r = case.get("turns") or {}
    return f"{r['turns_ok']:,}/{r['turns_expected']:,}" if "turns_ok" in r else None


def _pairs(case: dict[str, Any]) -> str | None:
    r = case.get("routing") or {}
    return f"{r['pairs']} × {r['turns_expected'] // max(r['pairs'], 1)}" if "pairs" in r else None


def _compared(case: dict[str, Any]) -> str | None:
    r = case.get("routing") or {}
    if "events_compared" not in r:
        return None
    return f"{r['events_compared']:,}/{r['events_missed_by_b']:,}"


def _wall(case: dict[str, Any]) -> float | None:
    walls = [p["wall_s"] for p in case.values() if isinstance(p, dict) and "wall_s" in p]
    return round(sum(walls), 1) if walls else None


REDIS_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], bool]] = [
    # (label, getter of {"turns": ..., "routing": ...}, show a ratio)
    ("sessions (connections)", _t("sessions"), False),
    ("turns ok / expected", _turns_ok, False),
    ("turns/s", _t("turns_per_s"), True),
    ("events/s", _t("events_per_s"), True),
    ("final p50 ms", _t("final_ms", "p50"), True),
    ("final p99 ms", _t("final_ms", "p99"), True),
    ("server CPU % (all nodes, of one core)", _t("server_cpu_pct"), True),
    ("server CPU ms per turn (all nodes)", _t("cpu_ms_per_turn"), True),
    ("Redis CPU %", _t("redis_cpu_pct"), True),
    ("Redis CPU ms per turn", _t("redis_cpu_ms_per_turn"), True),
    ("Redis commands per turn", _t("commands_per_turn"), True),
    ("load client CPU %", _t("client_cpu_pct"), False),
    ("rest of machine CPU %", _t("other_cpu_pct"), False),
    ("seq errors", _t("seq_errors"), False),
    ("routing: sessions × turns", _pairs, False),
    ("routing: 2nd client − 1st, p50 ms", _r("routing_ms", "p50"), False),
    ("routing: 2nd client − 1st, p99 ms", _r("routing_ms", "p99"), False),
    ("LLM token → 1st client p50 ms", _r("token_a_ms", "p50"), True),
    ("LLM token → 1st client p99 ms", _r("token_a_ms", "p99"), True),
    ("LLM token → 2nd client p50 ms", _r("token_b_ms", "p50"), True),
    ("LLM token → 2nd client p99 ms", _r("token_b_ms", "p99"), True),
    ("events compared / missed by the 2nd", _compared, False),
    ("wall s (both phases)", _wall, False),
]


def redis_rows(redis: dict[Any, Any]) -> list[list[str]]:
    one, three = redis.get(1), redis.get(3)
    rows = []
    for label, get, ratio in REDIS_ROWS:
        a = get(one) if one else None
        b = get(three) if three else None
        if a is None and b is None:
            continue
        r = ""
        if ratio and isinstance(a, int | float) and isinstance(b, int | float) and a:
            r = f"{b / a:.2f}×"
        rows.append([label, fmt(a), fmt(b), r])
    return rows


def ops_rows(turns: dict[str, Any]) -> list[list[str]]:
    """Per command: calls per turn (commandstats), of which sent by the node and run by its
    scripts (MONITOR phase), and the background calls per second."""
    per_turn = turns.get("ops_per_turn") or {}
    background = turns.get("background_per_s") or {}
    monitor = turns.get("monitor") or {}
    trips, scripted = monitor.get("trips_per_turn") or {}, monitor.get("scripted_per_turn") or {}
    names = set(per_turn) | set(background) | set(trips) | set(scripted)
    rows = []
    for name in sorted(names, key=lambda k: (-per_turn.get(k, 0), k)):
        rows.append(
            [
                name,
                f"{per_turn.get(name, 0):.2f}",
                f"{trips.get(name, 0):.2f}" if monitor else "-",
                f"{scripted.get(name, 0):.2f}" if monitor else "-",
                f"{background.get(name, 0):.1f}",
            ]
        )
    rows.append(
        [
            "total",
            f"{sum(per_turn.values()):.2f}",
            f"{sum(trips.values()):.2f}" if monitor else "-",
            f"{sum(scripted.values()):.2f}" if monitor else "-",
            f"{sum(background.values()):.1f}",
        ]
    )
    return rows


def describe_redis(sizes: Sizes, store_url: str) -> str:
    return (
        f"{sizes.redis_sessions} sessions × {sizes.redis_turns} turns (offline model), "
        f"round-robin over the nodes; then {sizes.redis_pairs} sessions × "
        f"{sizes.redis_pair_turns} turns on the fake LLM (ttft 100 ms, {sizes.tokens_per_s} "
        f"tokens/s, {sizes.redis_answer_tokens} answer tokens), each watched by a 1st client "
        "on the node running its turns and a 2nd one attached with user.reconnect to another "
        f"node (with 1 node: the same one). Redis at {store_url}, a fresh key prefix per run"
    )


REDIS_NOTE = (
    "This machine has {nproc} CPUs. The nodes, Redis and the load client share them (nodes "
    "unpinned, the load client and the fake LLM on CPUs {load}), so 3 nodes cannot give 3× "
    "the turns/s of one: a second process only adds what the CPUs have left, and every "
    "turn also costs Redis CPU (a separate, single-threaded service) and the load "
    "client's. The turn phase keeps to {cap} sessions: a server process's Redis client "
    "fails calls past 100 in flight (redis-py's default pool) instead of waiting, which a "
    "larger count on one node hits: turns then end with 'store unreachable' although Redis "
    "is fine (a server bug found with this bench). Routing: the 1st client gets "
    "each event after its Redis append; the 2nd, on another node, gets it from that node's "
    "blocking XREAD of the session's log, so the difference is the extra hop. Redis "
    "commands per turn are INFO commandstats over the turn phase of 1 node, less the "
    "commands the nodes send anyway (lease, watch, reap: counted over an idle window of "
    "{idle} s with every session connected, scaled to the phase's length), over the turns; "
    "Redis 7 counts the commands a Lua script runs under their own names, hence the split "
    "by MONITOR (from a phase of its own, whose batching, and so its counts, can differ a "
    "little). Other clients of the same Redis, if any, count too."
)

# ---------------------------------------------------------------- report


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2g}"
    return str(value)


ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], bool]] = [
    # (label, getter, show a ratio)
    ("held connections", lambda r: r.get("held"), False),
    (
        "turns ok / expected",
        lambda r: f"{r['turns_ok']:,}/{r['turns_expected']:,}" if "turns_ok" in r else None,
        False,
    ),
    ("turns/s", lambda r: r.get("turns_per_s"), True),
    ("events/s", lambda r: r.get("events_per_s"), True),
    ("events per turn", lambda r: _div(r.get("events"), r.get("turns_done")), True),
    ("first event p50 ms", lambda r: (r.get("first_event_ms") or {}).get("p50"), True),
    ("first event p99 ms", lambda r: (r.get("first_event_ms") or {}).get("p99"), True),
    ("final p50 ms", lambda r: (r.get("final_ms") or {}).get("p50"), True),
    ("final p99 ms", lambda r: (r.get("final_ms") or {}).get("p99"), True),
    ("routing p50 ms", lambda r: (r.get("routing_ms") or {}).get("p50"), True),
    ("routing p99 ms", lambda r: (r.get("routing_ms") or {}).get("p99"), True),
    ("answer tokens seen", lambda r: (r.get("routing_ms") or {}).get("tokens") or None, False),
    ("server CPU ms (turn phase)", lambda r: r.get("cpu_ms"), True),
    ("CPU ms per turn", lambda r: r.get("cpu_ms_per_turn"), True),
    ("CPU ms per event", lambda r: r.get("cpu_ms_per_event"), True),
    ("CPU ms per token", lambda r: r.get("cpu_ms_per_token"), True),
    ("RSS before connecting MB", lambda r: r.get("rss_before_mb"), True),
    ("RSS per session KB", lambda r: r.get("rss_kb_per_session"), True),
    ("seq errors", lambda r: r.get("seq_errors"), False),
    ("server CPU % (of one core)", lambda r: r.get("server_cpu_pct"), True),
    ("load client CPU %", lambda r: r.get("client_cpu_pct"), False),
    ("fake LLM CPU %", lambda r: r.get("fake_cpu_pct"), False),
    ("rest of machine CPU %", lambda r: r.get("other_cpu_pct"), False),
    ("connect phase s", lambda r: r.get("connect_s"), True),
    ("wall s", lambda r: r.get("wall_s"), False),
]


def scenario_rows(pair: dict[str, dict[str, Any]]) -> list[list[str]]:
    ref, ours = pair.get("reference", {}), pair.get("myagent-ws", {})
    rows = []
    for label, get, ratio in ROWS:
        a, b = get(ref) if ref else None, get(ours) if ours else None
        if a is None and b is None:
            continue
        r = ""
        if ratio and isinstance(a, int | float) and isinstance(b, int | float) and a:
            r = f"{b / a:.2f}×"
        rows.append([label, fmt(a), fmt(b), r])
    return rows


def turn_length_s(sizes: Sizes) -> float:
    """How long a realistic turn takes at the fake's pace: two replies, each after the
    time to first token, with the role, tool-call and finish chunks at the token rate."""
    return 2 * sizes.ttft_ms / 1000 + (sizes.answer_tokens + 7) / sizes.tokens_per_s


def describe(scenario: str, sizes: Sizes) -> str:
    if scenario == "offline":
        return (
            f"{sizes.sessions:,} sessions × {sizes.turns} turns, no LLM (both offline; the "
            f"reference with --offline-tokens {sizes.offline_tokens})"
        )
    if scenario == "instant":
        return (
            f"{sizes.sessions:,} sessions × {sizes.turns} turns, fake LLM instant "
            f"({sizes.instant_tokens} answer tokens)"
        )
    if scenario == "realistic":
        return (
            f"{sizes.realistic_sessions:,} sessions × 1 turn, {sizes.in_flight} in flight, fake "
            f"LLM ttft {sizes.ttft_ms} ms, {sizes.tokens_per_s} tokens/s, "
            f"{sizes.answer_tokens} answer tokens; the first {sizes.in_flight} turns start "
            f"evenly over one turn's length ({turn_length_s(sizes):.1f} s), then one starts "
            "whenever one ends"
        )
    return f"{sizes.idle_connections:,} idle connections, one session each, one process"


@dataclass
class Target:
    name: str
    measured: str
    ok: bool  # against the target itself
    check_ok: bool  # against twice the target (--check)


def ratio_target(name: str, results: dict[str, dict[str, Any]], key: str, limit: float) -> Target:
    ref, ours = results["reference"].get(key), results["myagent-ws"].get(key)
    r = _div(ours, ref)
    if r is None:
        return Target(name, f"{fmt(ours)} vs {fmt(ref)}: no ratio", False, False)
    return Target(name, f"{r:.2f}× ({fmt(ours)} vs {fmt(ref)})", r <= limit, r <= 2 * limit)


def redis_targets(redis: dict[Any, Any]) -> list[Target]:
    """Correctness only (no speed target: see REDIS_NOTE): every turn final and seq clean
    on 1 and on 3 nodes, and every event reached the client on another node."""
    if "skipped" in redis:
        # CI provides a Redis (.ci/run): there, its absence is a failure, not a skip.
        missing = multinode.in_ci()
        return [Target("redis: a Redis to run on", redis["skipped"], not missing, not missing)]
    out = []
    for count in REDIS_NODES:
        turns = (redis.get(count) or {}).get("turns") or {}
        routing = (redis.get(count) or {}).get("routing") or {}
        clean = (
            turns.get("turns_failed", 1) == 0
            and turns.get("seq_errors", 1) == 0
            and turns.get("held") == turns.get("connections")
            and turns.get("alive", False)
        )
        bits = [f"final {fmt(turns.get('turns_ok'))}/{fmt(turns.get('turns_expected'))}"]
        bits.append(f"seq errors {fmt(turns.get('seq_errors'))}")
        if turns.get("error"):
            bits.append(turns["error"])
        out.append(Target(f"redis/{count} node(s): every turn final, seq clean",
                          "; ".join(bits), clean, clean))  # fmt: skip
        routed = (
            routing.get("turns_ok") == routing.get("turns_expected")
            and routing.get("events_missed_by_b") == 0
            and bool(routing.get("events_compared"))
            and routing.get("alive", False)
        )
        measured = (
            f"turns {fmt(routing.get('turns_ok'))}/{fmt(routing.get('turns_expected'))}; "
            f"events compared {fmt(routing.get('events_compared'))}, missed "
            f"{fmt(routing.get('events_missed_by_b'))}"
        )
        if routing.get("error"):
            measured += f"; {routing['error']}"
        out.append(Target(f"redis/{count} node(s): the 2nd client got every event",
                          measured, routed, routed))  # fmt: skip
    return out


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[Target]:
    out: list[Target] = []
    for scenario, pair in results.items():
        for server, r in pair.items():
            failed = r.get("turns_failed", 0)
            clean = (
                r.get("held") == r.get("connections")
                and failed == 0
                and r.get("seq_errors", 0) == 0
                and r.get("alive", True)
            )
            bits = [f"held {fmt(r.get('held'))}/{fmt(r.get('connections'))}"]
            if "turns_ok" in r:
                bits.append(f"final {fmt(r['turns_ok'])}/{fmt(r['turns_expected'])}")
                if r.get("by_kind"):
                    bits.append(", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items())))
                bits.append(f"seq errors {r['seq_errors']}")
            if not r.get("alive", True):
                bits.append("server died")
            what = "every turn final, seq clean" if "turns_ok" in r else "sessions created"
            out.append(
                Target(
                    f"{scenario}/{server}: all held, {what}",
                    "; ".join(bits),
                    clean,
                    clean,
                )
            )
        if len(pair) < 2:
            continue
        if scenario == "offline":
            out.append(
                ratio_target("offline: CPU per event ≤ 2× reference", pair, "cpu_ms_per_event", 2)
            )
        elif scenario == "instant":
            out.append(
                ratio_target("instant: CPU per turn ≤ 3× reference", pair, "cpu_ms_per_turn", 3)
            )
        elif scenario == "realistic":
            ours = (pair["myagent-ws"].get("routing_ms") or {}).get("p99")
            ref = (pair["reference"].get("routing_ms") or {}).get("p99")
            if ours is None or ref is None:
                out.append(Target("realistic: routing p99 < 50 ms", "no tokens seen", False, False))
            else:
                out.append(
                    Target(
                        "realistic: routing p99 < 50 ms", f"{ours:.1f} ms", ours < 50, ours < 100
                    )
                )
                out.append(
                    Target(
                        "realistic: routing p99 ≤ reference p99 + 20 ms",
                        f"{ours:.1f} ms vs {ref:.1f} + 20 ms",
                        ours <= ref + 20,
                        ours <= ref + 40,
                    )
                )
            out.append(
                ratio_target("realistic: CPU per token ≤ 2× reference", pair, "cpu_ms_per_token", 2)
            )
            out.append(
                ratio_target(
                    "realistic: RSS per active session ≤ 3× reference",
                    pair,
                    "rss_kb_per_session",
                    3,
                )
            )
        elif scenario == "idle":
            out.append(
                ratio_target(
                    "idle: RSS per connection ≤ 1.5× reference", pair, "rss_kb_per_session", 1.5
                )
            )
    return out


def text_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def md_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "commit": commit,
        "loop": "uvloop" if UVLOOP else "asyncio",
    }


def redis_report(
    redis: dict[Any, Any], sizes: Sizes, store_url: str
) -> tuple[list[str], list[str]]:
    """The "Redis store: 1 vs 3 nodes" section: text lines and markdown lines."""
    title = "Redis store: 1 vs 3 nodes"
    if "skipped" in redis:
        line = f"skipped: {redis['skipped']}"
        return ["", f"== {title}: {line}"], ["", f"## {title}", "", line + "."]
    header = ["metric", "1 node", "3 nodes", "3/1"]
    rows = redis_rows(redis)
    described = describe_redis(sizes, store_url)
    note = REDIS_NOTE.format(
        nproc=os.cpu_count(),
        load=sorted(LOAD_CPUS) if LOAD_CPUS else "any",
        cap=sizes.redis_sessions,
        idle=sizes.redis_idle_s,
    )
    text = ["", f"== {title}: {described}", text_table(rows, header)]
    md = ["", f"## {title}", "", f"{described}.", "", md_table(rows, header)]
    one = (redis.get(1) or {}).get("turns") or {}
    if one.get("ops_per_turn"):
        oheader = [
            "command (1 node)",
            "calls per turn",
            "sent by the node",
            "run by its scripts",
            "background calls/s",
        ]
        orows = ops_rows(one)
        monitored = (one.get("monitor") or {}).get("turns")
        intro = (
            f"Redis operations per turn on 1 node: INFO commandstats over the turn phase "
            f"({fmt(one.get('turns_done'))} turns), net of the background the node sends "
            "anyway; split into what the node sent (round trips; a pipeline's commands "
            f"count one each) and what its Lua scripts ran by Redis MONITOR over "
            f"{fmt(monitored)} more turns (MONITOR slows Redis, so not while timing):"
        )
        text += ["", intro, text_table(orows, oheader)]
        md += ["", intro, "", md_table(orows, oheader)]
    for count in REDIS_NODES:
        for phase in ("turns", "routing"):
            res = (redis.get(count) or {}).get(phase) or {}
            problems = [f"{k} ×{v}" for k, v in (res.get("errors") or {}).items()]
            problems += res.get("node_log") or []
            if problems:
                line = f"{count} node(s), {phase}: " + "; ".join(problems)[:1000]
                text.append(line)
                md += ["", line]
    text.append(note)
    md += ["", note]
    return text, md


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    found: list[Target],
    sizes: Sizes,
    command: str,
    quick: bool,
    redis: dict[Any, Any] | None = None,
    store_url: str = multinode.REDIS_URL,
) -> tuple[str, str]:
    """The plain-text table for the terminal and the markdown for RESULTS.md."""
    header = ["metric", "reference", "myagent-ws", "ours/ref"]
    info = machine()
    text = [
        f"myagent-ws bench ({'quick' if quick else 'full'}), commit {info['commit']}; " + pinning()
    ]
    md = [
        "# Benchmark: myagent-ws vs the bare aiohttp reference server",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}, "
        f"aiohttp {info['aiohttp']}",
        f"- commit: `{info['commit']}`",
        f"- command: `{command}`",
        f"- CPUs: {pinning()}",
        f"- event loop: {info['loop']} (the servers and the fake LLM alike)",
        "",
        "Fresh server (and fake LLM) processes per scenario and server, on loopback. Server "
        "CPU is utime+stime over the turn phase only; RSS per session is VmRSS with the "
        "connections still open minus VmRSS before connecting, over the held sessions. "
        "Routing latency is from the fake LLM writing a token to the client reading it. "
        "The CPU % rows (100 = one core) show what else was busy in the turn phase: the load "
        "client, the fake LLM, and the rest of the machine (all CPUs' busy time minus those "
        "three and the server); a large last figure means other load skewed that run.",
    ]
    for scenario, pair in results.items():
        rows = scenario_rows(pair)
        walls = ", ".join(f"{s} {pair[s]['wall_s']} s" for s in SERVERS if s in pair)
        described = describe(scenario, sizes)
        text += ["", f"== {scenario}: {described} (wall: {walls})", text_table(rows, header)]
        md += ["", f"## {scenario}", "", f"{described}; wall time {walls}.", ""]
        md.append(md_table(rows, header))
        if scenario == "instant" and "myagent-ws" in pair:
            note = (
                f"myagent-ws: {fmt(pair['myagent-ws'].get('turns_per_s'))} turns/s; "
                f"upstream project: {UPSTREAM_TURNS_PER_S} turns/s on this machine."
            )
            text.append(note)
            md += ["", note]
        for server in SERVERS:
            errors = pair.get(server, {}).get("errors")
            if errors:
                line = f"{server} errors: " + "; ".join(f"{k} ×{v}" for k, v in errors.items())
                text.append(line)
                md += ["", line]
    if redis is not None:
        more_text, more_md = redis_report(redis, sizes, store_url)
        text += more_text
        md += more_md
    theader = ["target", "measured", "pass"]
    trows = [[t.name, t.measured, "pass" if t.ok else "FAIL"] for t in found]
    if quick:
        theader.append("--check (2× slack)")
        for row, t in zip(trows, found, strict=True):
            row.append("pass" if t.check_ok else "FAIL")
    text += ["", "== targets", text_table(trows, theader)]
    md += ["", "## Targets", "", md_table(trows, theader), ""]
    return "\n".join(text), "\n".join(md)


# ---------------------------------------------------------------- main


async def run_all(scenarios: list[str], sizes: Sizes, logdir: Path) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        results[scenario] = {}
        for server in SERVERS:
            print(f"-- {scenario} / {server} ...", file=sys.stderr, flush=True)
            try:
                res = await run_case(scenario, server, sizes, logdir)
            except Exception as exc:  # report it and go on: the other runs still count
                print(f"   FAILED: {exc}", file=sys.stderr, flush=True)
                res = {"server": server, "error": f"{type(exc).__name__}: {exc}"[:300]}
                res.update(alive=False, wall_s=0.0, errors={res["error"]: 1})
            results[scenario][server] = res
            print(f"   done in {res['wall_s']} s", file=sys.stderr, flush=True)
    return results


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-scale sizes, for CI")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed 2×")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown output (default: bench/RESULTS.md; with --quick, a temp file)",
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run all three programs on uvloop (the extra)"
    )
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--sessions", type=int, help="sessions in offline/instant/realistic")
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument(
        "--offline-tokens", type=int, help="reference's partial_answers per offline turn"
    )
    parser.add_argument(
        "--store-url",
        default=multinode.REDIS_URL,
        help="the Redis of the 'redis' section (loopback only; a fresh key prefix per run)",
    )
    args = parser.parse_args()
    global UVLOOP
    UVLOOP = args.uvloop
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    scenarios = [s for s in sections if s in SCENARIOS]
    try:
        multinode.loopback_redis(args.store_url)
    except ValueError as exc:
        parser.error(str(exc))
    sizes = QUICK if args.quick else FULL
    if args.sessions:
        sizes = replace(sizes, sessions=args.sessions, realistic_sessions=args.sessions)
    if args.offline_tokens is not None:
        sizes = replace(sizes, offline_tokens=args.offline_tokens)
    if args.idle_connections:
        sizes = replace(sizes, idle_connections=args.idle_connections)
    out = args.out
    if out is None:
        out = (
            Path(tempfile.gettempdir()) / "myagent-ws-bench-quick.md"
            if args.quick
            else ROOT / "bench" / "RESULTS.md"
        )
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    serving.raise_open_files()  # the servers inherit it: 10,000 sockets each side
    if LOAD_CPUS is not None:
        os.sched_setaffinity(0, LOAD_CPUS)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    redis: dict[Any, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as logdir:
            results = asyncio.run(run_all(scenarios, sizes, Path(logdir)))
            if "redis" in sections:
                redis = asyncio.run(run_redis(sizes, Path(logdir), args.store_url))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        Child.stop_all()
        multinode.NodeSet.stop_all_now()  # a last resort: each phase stops its own nodes
    found = targets(results) + (redis_targets(redis) if redis is not None else [])
    text, md = report(results, found, sizes, command.strip(), args.quick, redis, args.store_url)
    print(text)
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s; wrote {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    if args.check:
        missed = [t for t in found if not t.check_ok]
        for t in missed:
            print(f"CHECK FAILED: {t.name}: {t.measured}", file=sys.stderr)
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
