"""`make bench`: myagent-ws against the bare aiohttp reference server, same machine, same run.

    .venv/bin/python bench/run.py                      # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick --check      # seconds-scale CI guard

Each (scenario, server) pair gets fresh processes on loopback: the server (and a fresh fake
LLM when the scenario needs one), driven by bench/load.py from this process. The servers are
black boxes; their CPU (utime+stime) and memory (VmRSS) come from /proc, sampled around the
turn phase only. Ratios are ours / reference, so the machine's speed cancels out.

Then "Python client" (bench/client_bench.py): turns through myagent_ws.client against the
same turns over a bare aiohttp loop, and turns through a proxy that cuts the link every 25
events (every event once, in order; the time to resume).

Then "Redis store: 1 vs 3 nodes" (bench/redis_bench.py): turns/s with sessions round-robin
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
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

# Run as a script, only bench/ is on sys.path: the checkout goes first, so that bench's
# modules import each other as `bench.X` however they were started (tests import bench.*).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import client_bench, harness, load, multinode, serving
from bench.harness import (
    FULL,
    LOAD_CPUS,
    NO_RATE_LIMIT,
    PYTHON,
    QUICK,
    SERVER_CPUS,
    Child,
    Sizes,
    cpu_s,
    loop_flag,
    machine_busy_s,
    own_cpu_s,
    pinning,
    rss_bytes,
    server_args,
    start_fake,
)
from bench.redis_bench import redis_report, redis_targets, run_redis
from bench.report import Row, Target, compared_rows, div, fmt, md_table, text_table

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("reference", "myagent-ws")
SCENARIOS = ("offline", "instant", "realistic", "idle")
SECTIONS = (*SCENARIOS, "client", "redis")  # what --only may name
UPSTREAM_TURNS_PER_S = 36  # the upstream project, measured on this machine


# ---------------------------------------------------------------- child processes


async def start_server(
    server: str, llm_url: str | None, sizes: Sizes, logdir: Path, tag: str, *more: str
) -> tuple[Child, str]:
    """The reference or our server (with `more` arguments), fresh, on its own CPU."""
    if server == "reference":
        argv = [PYTHON, "bench/reference_server.py", "--port", "0"]
        if llm_url:
            argv += ["--llm-url", llm_url]
        else:
            argv += ["--offline-tokens", str(sizes.offline_tokens)]
        child = Child(f"{tag}-server", argv + loop_flag(), logdir, SERVER_CPUS)
        port = await child.ready_port()
    else:
        port = multinode.free_port()
        argv = [PYTHON, "-m", "myagent_ws", "server", *server_args(llm_url)]
        argv += ["--host", "127.0.0.1", "--port", str(port), *more]
        child = Child(f"{tag}-server", argv, logdir, SERVER_CPUS)
        await child.healthy(port)
    return child, f"ws://127.0.0.1:{port}/"


# ---------------------------------------------------------------- one (scenario, server) run


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
        cpu_ms_per_turn=div(cpu_ms, res.get("turns_done")),
        cpu_ms_per_event=div(cpu_ms, res.get("events")),
        cpu_ms_per_token=div(cpu_ms, (res.get("routing_ms") or {}).get("tokens")),
        rss_before_mb=marks["rss0"] / 2**20,
        rss_kb_per_session=div((marks.get("rss1", 0) - marks["rss0"]) / 1024, held),
        seq_errors=sum((res.get("seq") or {}).values()),
    )
    return res


# ---------------------------------------------------------------- report


ROWS: list[Row] = [
    # (label, getter, show a ratio)
    ("held connections", lambda r: r.get("held"), False),
    (
        "turns ok / expected",
        lambda r: f"{r['turns_ok']:,}/{r['turns_expected']:,}" if "turns_ok" in r else None,
        False,
    ),
    ("turns/s", lambda r: r.get("turns_per_s"), True),
    ("events/s", lambda r: r.get("events_per_s"), True),
    ("events per turn", lambda r: div(r.get("events"), r.get("turns_done")), True),
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
    return compared_rows(ROWS, pair.get("reference"), pair.get("myagent-ws"))


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


def ratio_target(name: str, results: dict[str, dict[str, Any]], key: str, limit: float) -> Target:
    ref, ours = results["reference"].get(key), results["myagent-ws"].get(key)
    r = div(ours, ref)
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
        "loop": "uvloop" if harness.UVLOOP else "asyncio",
    }


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    found: list[Target],
    sizes: Sizes,
    command: str,
    quick: bool,
    redis: dict[Any, Any] | None = None,
    store_url: str = multinode.REDIS_URL,
    client: dict[str, Any] | None = None,
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
    if client is not None:
        more_text, more_md = client_report(client)
        text += more_text
        md += more_md
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


# ---------------------------------------------------------------- the Python client


async def run_client(sizes: Sizes, logdir: Path) -> dict[str, Any]:
    """One myagent-ws server (offline weather), rate limit lifted for the raw loop."""
    child, url = await start_server("myagent-ws", None, sizes, logdir, "client", *NO_RATE_LIMIT)
    try:
        return await client_bench.measure(
            url, sizes.client_turns, sizes.client_cut_turns, client_bench.CUT_EVERY
        )
    finally:
        child.stop()


def client_report(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    raw, ours, cut = result["raw_ms"], result["client_ms"], result["cut"]
    rows = [
        ["turn p50 (ms)", fmt(raw["p50"]), fmt(ours["p50"]), fmt(result["client_over_raw"])],
        ["turn p99 (ms)", fmt(raw["p99"]), fmt(ours["p99"]), fmt(div(ours["p99"], raw["p99"]))],
    ]
    header = ["metric", "bare aiohttp", "myagent_ws.client", "client/bare"]
    resume = cut["resume_ms"] or {}
    line = (
        f"Link cut every {client_bench.CUT_EVERY} events: {cut['events']} events, "
        f"{cut['cuts']} cuts, "
        f"{cut['reconnects']} reconnects, {cut['lost_or_repeated']} lost or repeated, "
        f"{cut['turns_without_one_terminal']} turns without exactly one terminal event; "
        f"resume p50 {fmt(resume.get('p50'))} ms, p99 {fmt(resume.get('p99'))} ms."
    )
    title = f"Python client: {result['turns']} weather turns on one session (offline model)"
    text = ["", f"== {title}", text_table(rows, header), line]
    md = ["", f"## {title}", "", md_table(rows, header), "", line]
    return text, md


def client_targets(result: dict[str, Any]) -> list[Target]:
    cut = result["cut"]
    clean = cut["lost_or_repeated"] == 0 and cut["turns_without_one_terminal"] == 0
    ratio = result["client_over_raw"]
    return [
        Target(
            "client: every event once across cut links",
            f"{cut['lost_or_repeated']} lost or repeated in {cut['events']}",
            clean,
            clean,
        ),
        Target("client: turn p50 ≤ 1.5× bare aiohttp", f"{ratio:.2f}×", ratio <= 1.5, ratio <= 3),
    ]


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
    harness.UVLOOP = args.uvloop
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
    client: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as logdir:
            results = asyncio.run(run_all(scenarios, sizes, Path(logdir)))
            if "client" in sections:
                client = asyncio.run(run_client(sizes, Path(logdir)))
            if "redis" in sections:
                redis = asyncio.run(run_redis(sizes, Path(logdir), args.store_url))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        Child.stop_all()
        multinode.NodeSet.stop_all_now()  # a last resort: each phase stops its own nodes
    found = targets(results) + (client_targets(client) if client is not None else [])
    found += redis_targets(redis) if redis is not None else []
    text, md = report(
        results, found, sizes, command.strip(), args.quick, redis, args.store_url, client
    )
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
