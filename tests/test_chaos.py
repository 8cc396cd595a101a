"""The fault-injection runs of bench/chaos.py, small enough for CI: forced disconnects
(mid-turn, mid-replay, between turns) must lose, duplicate and reorder no event, with the
server in this process, and with three real server processes sharing Redis where every
reconnect goes to another process."""

from __future__ import annotations

from bench.chaos import Report, run_chaos
from tests.cluster import require_redis


async def test_100_forced_disconnects_lose_and_duplicate_nothing() -> None:
    report = await run_chaos(100, sessions=8, seed=1, max_seconds=60)
    assert_nothing_lost(report, 100)


async def test_150_disconnects_hopping_over_3_processes_on_redis_lose_nothing() -> None:
    """30 clients over 3 `myagent-ws server` processes (Redis store, a fresh key prefix,
    deleted afterwards); each reconnect after a cut goes to another process."""
    require_redis()  # in CI (CI=true) a missing Redis fails this test
    report = await run_chaos(150, sessions=30, seed=1, max_seconds=120, nodes=3)
    assert_nothing_lost(report, 150)
    details = repr(report)
    assert report.hops == report.disconnects, details  # every reconnect after a cut hopped
    assert sorted(report.opened) == [0, 1, 2], details  # every process served connections
    assert not report.miscounted, details


def assert_nothing_lost(report: Report, disconnects: int) -> None:
    """No event lost, repeated or out of order over at least `disconnects` cuts of every
    kind that matters, and the run's own verdict agrees."""
    details = repr(report)
    assert report.lost == 0, details
    assert report.duplicated == 0, details
    assert report.out_of_order == 0, details
    assert report.stuck == 0 and not report.problems and not report.gaps, details
    assert report.disconnects >= disconnects, details
    assert report.cuts["mid_turn"] >= 1 and report.cuts["at_send"] >= 1, details
    assert report.cuts["mid_replay"] >= 1, details
    assert report.ok, details
