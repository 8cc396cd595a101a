"""The "Redis store: 1 vs 3 nodes" section of bench/run.py: 1, then 3 `myagent-ws server`
processes (bench/multinode.py) sharing one Redis under a fresh key prefix. It measures
turns/s with sessions round-robin over the processes, the routing latency to a client
attached to another process than the one running the turn, and the Redis commands a turn
costs: what the shared store costs, and that a client on any process gets every event.
Not a scaling figure: the processes, Redis and the load client share the CPUs, so on 2
cores 3 nodes cannot give 3× the turns/s of one."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import load, multinode, redis_stats
from bench.harness import (
    ALL_CPUS,
    LOAD_CPUS,
    PYTHON,
    Child,
    Sizes,
    cpu_s,
    machine_busy_s,
    own_cpu_s,
    server_args,
    start_fake,
)
from bench.report import Row, Target, compared_rows, div, fmt, md_table, text_table

REDIS_NODES = (1, 3)
# Our own questions to Redis, not the servers' commands.
BENCH_COMMANDS = {"info"}


def _ops(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in BENCH_COMMANDS and after[k] > before.get(k, 0)
    }


def _per_turn(
    busy: dict[str, int], idle: dict[str, int], busy_s: float, idle_s: float, turns: int
) -> dict[str, float]:
    """Per turn, each count of `busy` (over `busy_s` seconds) less the background the idle
    window's counts (over `idle_s` seconds) give for as long; never below 0."""
    return {k: max(0.0, (v - idle.get(k, 0) * busy_s / idle_s) / turns) for k, v in busy.items()}


async def run_redis_turns(count: int, sizes: Sizes, logdir: Path, store_url: str) -> dict[str, Any]:
    """`count` server processes on the Redis store (offline model), sessions round-robin
    over them, each running turns in a row. Around the turn phase: the processes' CPU,
    Redis's CPU and its command counts, and, before it, the same counts over an idle
    window with every session connected (the processes' own loops: lease, watch, tail,
    reap), so the counts per turn are net of them. With one node, then a smaller phase
    under Redis MONITOR tells the node's round trips from its scripts' commands."""
    started = time.perf_counter()
    probe = redis_stats.RedisProbe(store_url)
    marks: dict[str, Any] = {}
    try:
        async with multinode.NodeSet(
            count, server_args(), store_url=store_url, logdir=logdir / f"redis-{count}n-turns",
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
        res["ops_per_turn"] = _per_turn(busy, idle, busy_s, idle_s, turns)
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
            cpu_ms_per_turn=div(cpu_ms, turns),
            redis_cpu_ms_per_turn=div(redis_ms, turns),
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
    monitor = redis_stats.Monitor(store_url, nodes.prefix)
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
    return {
        "turns": turns,
        "turns_ok": res.get("turns_ok"),
        "lines": len(lines),
        "trips_per_turn": _per_turn(trips, idle_trips, busy_s, idle_s, turns) if turns else {},
        "scripted_per_turn": (
            _per_turn(scripted, idle_scripted, busy_s, idle_s, turns) if turns else {}
        ),
    }


async def run_redis_routing(
    count: int, sizes: Sizes, logdir: Path, store_url: str
) -> dict[str, Any]:
    """`count` server processes on the Redis store, on the fake LLM at a realistic pace:
    pairs of clients per session, one on the process running its turns, one attached to
    another process (the same one, with one node); see load.run_routing."""
    started = time.perf_counter()
    fake: Child | None = None
    paced = replace(sizes, ttft_ms=100, answer_tokens=sizes.redis_answer_tokens)
    try:
        fake, llm_url = await start_fake("realistic", paced, logdir, f"redis-{count}n")
        async with multinode.NodeSet(
            count, server_args(llm_url), store_url=store_url,
            logdir=logdir / f"redis-{count}n-routing", cpus=ALL_CPUS, python=PYTHON,
        ) as nodes:  # fmt: skip
            res = await load.run_routing(
                nodes.urls, sizes.redis_pairs, sizes.redis_pair_turns, sizes.phase_timeout_s
            )
            res["alive"] = all(node.alive() for node in nodes.nodes)
            res["node_log"] = nodes.log_lines()[:5]
    finally:
        if fake is not None:
            fake.stop()
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


REDIS_ROWS: list[Row] = [
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
    return compared_rows(REDIS_ROWS, redis.get(1), redis.get(3))


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
    "client's. Routing: the 1st client gets "
    "each event after its Redis append; the 2nd, on another node, gets it from that node's "
    "blocking XREAD of the session's log, so the difference is the extra hop. Redis "
    "commands per turn are INFO commandstats over the turn phase of 1 node, less the "
    "commands the nodes send anyway (lease, watch, reap: counted over an idle window of "
    "{idle} s with every session connected, scaled to the phase's length), over the turns; "
    "Redis 7 counts the commands a Lua script runs under their own names, hence the split "
    "by MONITOR (from a phase of its own, whose batching, and so its counts, can differ a "
    "little). Other clients of the same Redis, if any, count too."
)


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
