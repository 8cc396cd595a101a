"""What bench/run.py's sections share: how big each one is (Sizes), the child processes
they start (a log file each, placed on CPUs, all on one event loop), those processes' CPU
and memory from /proc, and the fake LLM.

bench/redis_bench.py needs these as much as run.py does, and run.py imports it, so they
live here rather than in run.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

from bench.multinode import WEATHER, node_env

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
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
    # The Python client: sequential turns (raw, then the client), then turns over cut links.
    client_turns: int = 1000
    client_cut_turns: int = 300


FULL = Sizes()
QUICK = Sizes(
    sessions=200,
    # Six turns each: with two, the turn phase cost ~0.15 s of CPU and one stall of either
    # server moved the CPU-per-event ratio by 2× (1.1× to 4.2× on one machine in an hour).
    turns=6,
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
    client_turns=100,
    client_cut_turns=40,
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
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=node_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
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
# on) unless --uvloop. main() in run.py sets it: read it as harness.UVLOOP, when needed.
UVLOOP = False


def loop_flag() -> list[str]:
    return ["--uvloop"] if UVLOOP else []


# For a load that sends faster than a person would (the fuzzer, the client bench's loop).
NO_RATE_LIMIT = ("--rate-limit-per-s", "1000000", "--rate-limit-burst", "1000000")


def server_args(llm_url: str | None = None) -> list[str]:
    """`myagent-ws server` arguments for a bench run, less --host/--port: the weather agent
    on the run's event loop, on the LLM at `llm_url` (else the offline model)."""
    args = [WEATHER, "--event-loop", "uvloop" if UVLOOP else "asyncio"]
    args += ["--drain-timeout-s", "0"]  # a stopped phase stops at once, like the reference
    args += ["--max-connections-per-ip", "0"]  # every load client is on 127.0.0.1
    if llm_url:
        args += ["--llm-base-url", llm_url, "--model", "fake", "--llm-api-key", "bench"]
    return args


def pinning() -> str:
    """How processes are placed on CPUs, for the report."""
    if SERVER_CPUS is None or LOAD_CPUS is None:
        return "not pinned (fewer than 2 CPUs)"
    return (
        f"server on CPU {sorted(SERVER_CPUS)}, fake LLM and load client on CPUs {sorted(LOAD_CPUS)}"
    )


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
    fake = Child(f"{tag}-fake", argv + loop_flag(), logdir, LOAD_CPUS)
    port = await fake.ready_port()
    return fake, f"http://127.0.0.1:{port}/v1"
