"""The protocol fuzzer in CI: 5,000 frames of bench/fuzz.py (drawn from schemas/ and
mutated) against a real server process serving the weather agent on the offline model.
Nothing crashes, no reply carries a stack trace or breaks its schema, every connection
still runs a normal turn afterwards, and the replies cover the error codes the mutations
aim at, which shows the fuzzer really reached each part of the protocol."""

from __future__ import annotations

from bench import fuzz

# Each kind of mutation has an answer of its own; all of them must show up.
EXPECTED_CODES = {
    "schema_violation",  # wrong types, missing fields, non-objects
    "invalid_json",  # broken JSON text, nesting too deep
    "unknown_event",  # unknown and server event names
    "session_not_found",  # sessions that do not exist, are another's or have ended
    "unsupported_frame",  # binary frames
    "message_too_large",  # frames past the 1 MiB limit
    "confirm_not_pending",  # a user.response that nothing waits for
}


async def test_5000_fuzzed_frames_crash_nothing_and_every_connection_still_serves() -> None:
    report = await fuzz.run(frames=5000, connections=8, seed=0, max_seconds=120)
    evidence = fuzz.table(report)
    assert report["complete"], evidence
    assert report["crashes"] == 0, evidence
    assert report["stack_traces"] == 0, evidence
    assert report["invalid_replies"] == 0, evidence
    assert report["hangs"] == 0, evidence
    assert report["final_turns_ok"] == report["connections"] == 8, evidence
    assert report["ok"], evidence
    assert EXPECTED_CODES <= set(report["error_codes"]), evidence
    # No frame made the server fail: no internal_error, no traceback in its log.
    assert "internal_error" not in report["error_codes"], evidence
    assert report["server_log_tracebacks"] == 0, evidence
    # Valid frames reached the agents too: sessions were made and turns ran.
    assert report["events"].get("agent.session_created", 0) > 0, evidence
    assert report["events"].get("agent.final_answer", 0) > 0, evidence
