"""Bad frames get their error code and the same connection then completes a normal turn."""

from __future__ import annotations

import json

import pytest

from tests.client import names

LIMIT = 1 << 20

BAD_FRAMES = [
    ("not json", "invalid_json", None),
    ("[1, 2, 3]", "schema_violation", ""),
    ('"just a string"', "schema_violation", ""),
    (json.dumps({"content": "no event"}), "schema_violation", "/event"),
    (json.dumps({"event": 42}), "schema_violation", "/event"),
    (json.dumps({"event": "user.dance"}), "unknown_event", None),
    (
        json.dumps({"event": "user.message", "content": "no session"}),
        "schema_violation",
        "/session_id",
    ),
    (
        json.dumps({"event": "user.message", "session_id": "s_x", "content": 5}),
        "schema_violation",
        "/content",
    ),
    (
        json.dumps({"event": "user.message", "session_id": 7, "content": "hi"}),
        "schema_violation",
        "/session_id",
    ),
    (json.dumps({"event": "user.cancel"}), "schema_violation", "/session_id"),
    (
        json.dumps({"event": "user.message", "session_id": "s_nosuch", "content": "hi"}),
        "session_not_found",
        None,
    ),
    (
        json.dumps({"event": "user.end_session", "session_id": "s_nosuch"}),
        "session_not_found",
        None,
    ),
    (json.dumps({"event": "user.reconnect", "session_id": "s_nosuch"}), "session_not_found", None),
]


async def assert_still_serves(client) -> None:
    sid = await client.create_session()
    events = await client.turn(sid, "What's the weather in London?")
    assert events[-1]["event"] == "agent.final_answer", names(events)


@pytest.mark.parametrize(
    ("frame", "code", "path"), BAD_FRAMES, ids=[c + ":" + f[:30] for f, c, _ in BAD_FRAMES]
)
async def test_bad_frame_gets_its_code_and_connection_stays_open(serve, connect, frame, code, path):
    server = await serve()
    client = await connect(server)
    await client.send(frame)
    error = await client.error(code)
    assert error["content"] and "Traceback" not in error["content"]
    if path is not None:
        assert error["metadata"]["path"] == path
        assert error["metadata"]["reason"]
    await assert_still_serves(client)


async def test_two_mib_frame_is_message_too_large(serve, connect):
    server = await serve()
    client = await connect(server)
    big = json.dumps({"event": "user.message", "session_id": "s_x", "content": "x" * (2 * LIMIT)})
    await client.send(big)
    error = await client.error("message_too_large")
    assert "1048576" in error["content"] or "1 MiB" in error["content"]
    await assert_still_serves(client)


async def test_binary_frame_is_unsupported_frame(serve, connect):
    server = await serve()
    client = await connect(server)
    await client.ws.send_bytes(b"\x00\x01binary")
    await client.error("unsupported_frame")
    await assert_still_serves(client)


async def test_many_bad_frames_in_a_row_do_not_break_the_session(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    for frame, code, _ in BAD_FRAMES:
        await client.send(frame)
        await client.error(code)
    events = await client.turn(sid, "Tell me about 上海")
    assert events[-1]["event"] == "agent.final_answer"


async def test_unknown_extra_fields_are_ignored(serve, connect):
    server = await serve()
    client = await connect(server)
    await client.send(
        {
            "event": "user.create_session",
            "client_version": "9.9",
            "timestamp": "2026-01-01T00:00:00Z",
        }
    )
    created = await client.expect("agent.session_created")
    await client.send(
        {
            "event": "user.message",
            "session_id": created["session_id"],
            "content": "深圳天气",
            "x": {"y": 1},
        }
    )
    events = await client.until_terminal(created["session_id"])
    assert events[-1]["event"] == "agent.final_answer"


async def test_user_response_without_pending_confirmation_is_confirm_not_pending(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    await client.send(
        {
            "event": "user.response",
            "session_id": sid,
            "step_id": "t1",
            "content": {"confirmed": True},
        }
    )
    error = await client.error("confirm_not_pending")
    assert "t1" in error["content"] and error["session_id"] == sid
    assert (await client.turn(sid, "hello"))[-1]["event"] == "agent.final_answer"


async def test_a_lone_surrogate_in_a_key_is_an_ignored_extra_field(serve, connect):
    """Found by bench/fuzz.py: jsonschema-rs cannot take a key that is not valid Unicode;
    the frame is still judged by its schema (an unknown extra field is ignored)."""
    server = await serve()
    client = await connect(server)
    await client.send('{"event":"user.list_agents","\\ud800":1}')
    assert (await client.recv())["event"] == "system.agents"
    await client.send('{"event":"user.message","\\udfff":null}')
    error = await client.error("schema_violation")
    assert error["metadata"]["path"] == "/session_id"
