"""`make bench`: myagent-ws against the bare aiohttp reference server, same machine, same run.

    .venv/bin/python bench/run.py                      # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick --check      # seconds-scale CI guard

Each (scenario, server) pair gets fresh processes on loopback: the server (and a fresh fake
LLM when the scenario needs one), driven by bench/load.py from this process. The servers are
black boxes; their CPU (utime+stime) and memory (VmRSS) come from /proc, sampled around the
turn phase only. Ratios are ours / reference, so the machine's speed cancels out.
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
import serving  # bench/ is not a package: found through sys.path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
SERVERS = ("reference", "myagent-ws")
SCENARIOS = ("offline", "instant", "realistic", "idle")
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


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    found: list[Target],
    sizes: Sizes,
    command: str,
    quick: bool,
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
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--sessions", type=int, help="sessions in offline/instant/realistic")
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument(
        "--offline-tokens", type=int, help="reference's partial_answers per offline turn"
    )
    args = parser.parse_args()
    global UVLOOP
    UVLOOP = args.uvloop
    scenarios = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
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
    try:
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as logdir:
            results = asyncio.run(run_all(scenarios, sizes, Path(logdir)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        Child.stop_all()
    found = targets(results)
    text, md = report(results, found, sizes, command.strip(), args.quick)
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
