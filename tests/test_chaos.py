"""The fault-injection run of bench/chaos.py, small enough for CI: 100 forced disconnects
(mid-turn, mid-replay, between turns) must lose, duplicate and reorder no event."""

from __future__ import annotations

from bench.chaos import run_chaos


async def test_100_forced_disconnects_lose_and_duplicate_nothing() -> None:
    report = await run_chaos(100, sessions=8, seed=1, max_seconds=60)
    details = repr(report)
    assert report.lost == 0, details
    assert report.duplicated == 0, details
    assert report.out_of_order == 0, details
    assert report.stuck == 0 and not report.problems and not report.gaps, details
    assert report.disconnects >= 100, details
    assert report.cuts["mid_turn"] >= 1 and report.cuts["at_send"] >= 1, details
    assert report.cuts["mid_replay"] >= 1, details
    assert report.ok, details
