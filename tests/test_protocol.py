"""The wire protocol over the real schema files: decode errors, outbound checks, encoding,
and agreement with the shared PROTOCOL.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from myagent_ws import protocol
from myagent_ws.protocol import (
    CLIENT_EVENTS,
    ERROR_CODES,
    PROTOCOL_VERSION,
    SERVER_EVENTS,
    Protocol,
    ProtocolError,
    encode,
    error_event,
    load_schemas,
    make_event,
    now_iso,
    requested_agent,
    response_approved,
)
from tests.conftest import reference

LIMIT = 1 << 20
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
PROTOCOL_MD = reference("PROTOCOL.md")
SCHEMAS = load_schemas()


@pytest.fixture(scope="module")
def proto() -> Protocol:
    return Protocol()


def decode_error(proto: Protocol, frame: str | Any) -> ProtocolError:
    data = frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False)
    with pytest.raises(ProtocolError) as info:
        proto.decode(data)
    return info.value


# -- the schema files ------------------------------------------------------------------


def test_schema_files_are_what_the_package_loads() -> None:
    on_disk = {p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(SCHEMAS) == CLIENT_EVENTS | SERVER_EVENTS | {"envelope"}
    assert len(CLIENT_EVENTS) == 8 and len(SERVER_EVENTS) == 17


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.json")
    assert schema["title"] and schema["description"]


@pytest.mark.parametrize("name", sorted(CLIENT_EVENTS | SERVER_EVENTS))
def test_event_schema_pins_its_event_and_includes_the_envelope(name: str) -> None:
    schema = SCHEMAS[name]
    assert schema["properties"]["event"]["const"] == name
    assert {"$ref": "envelope.json"} in schema["allOf"]
    assert "event" in schema["required"]
    assert schema.get("additionalProperties", True) is not False  # extra fields allowed

    def described(node: Any, where: str) -> None:
        for key, sub in node.get("properties", {}).items():
            assert isinstance(sub, dict) and sub.get("description"), f"{where}/{key}"
            described(sub, f"{where}/{key}")

    described(schema, name)


def test_references_are_local() -> None:
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', "".join(p.read_text() for p in SCHEMA_DIR.glob("*")))
    assert refs and all(r.startswith("envelope.json") for r in refs)


def test_session_and_system_events_require_their_fields() -> None:
    for name in SERVER_EVENTS:
        required = set(SCHEMAS[name]["required"])
        if name.startswith("agent."):
            assert {"session_id", "seq", "event_id", "timestamp"} <= required, name
            assert SCHEMAS[name]["properties"]["seq"]["minimum"] == 1
        else:
            assert "timestamp" in required and "seq" not in required, name
    for name in ("system.error", "agent.error"):
        code = SCHEMAS[name]["properties"]["metadata"]["properties"]["code"]
        assert code["$ref"] == "envelope.json#/$defs/error_code"


# -- PROTOCOL.md agreement ----------------------------------------------------------------


def _table_events(text: str, heading: str) -> set[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`([a-z]+\.[a-z_]+)`", section, flags=re.M))


def test_every_event_in_protocol_md_has_a_schema() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    client = _table_events(text, "## Client → server")
    server = _table_events(text, "## Server → client")
    assert len(client) == 8 and len(server) == 17
    assert client == CLIENT_EVENTS
    assert server == SERVER_EVENTS
    for name in client | server:
        assert (SCHEMA_DIR / f"{name}.json").is_file(), name


# Codes added since PROTOCOL.md's list: named in its additions table, or our own.
ADDED_CODES = {"server_draining", "confirm_not_pending", "node_lost"}


def test_error_codes_match_protocol_md() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1].split("\n## ", 1)[0].split("Every error", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", section)) - {"metadata"}
    assert len(listed) == 17
    assert ERROR_CODES == listed | ADDED_CODES
    additions = text.split("## Additions", 1)[1].split("\n## ", 1)[0]
    assert "`server_draining`" in additions


def test_protocol_version() -> None:
    assert PROTOCOL_VERSION == 1


# -- decode: good frames ---------------------------------------------------------------


def test_seed_python_client_message_decodes(proto: Protocol) -> None:
    assert proto.decode(json.dumps({"event": "user.create_session"})) == {
        "event": "user.create_session"
    }


def test_seed_javascript_client_messages_decode(proto: Protocol) -> None:
    ts = "2026-01-01T12:00:00.000Z"  # what new Date().toISOString() produces
    assert proto.decode(json.dumps({"event": "user.create_session", "timestamp": ts}))
    message = {"event": "user.message", "session_id": "s_1", "content": "你好！", "timestamp": ts}
    assert proto.decode(json.dumps(message, ensure_ascii=False)) == message


VALID_CLIENT_MESSAGES = [
    {"event": "user.create_session", "content": "create_session"},
    {"event": "user.create_session", "content": {"agent": "weather"}},
    {"event": "user.create_session", "content": {}},
    {"event": "user.create_session", "content": None},
    {"event": "user.create_session", "metadata": {"agent": "weather"}},
    {"event": "user.message", "session_id": "s_1", "content": "北京今天天气怎么样？"},
    {"event": "user.cancel", "session_id": "s_1"},
    {"event": "user.end_session", "session_id": "s_1"},
    {"event": "user.list_agents"},
    {"event": "user.reconnect", "session_id": "s_1"},
    {"event": "user.reconnect", "session_id": "s_1", "content": {"last_seq": 4}},
    {"event": "user.ack", "content": {"last_seq": 0}},
    {"event": "user.ack", "content": {"last_event_id": "s_1:3"}},
    {"event": "user.ack", "session_id": "s_1", "content": {"last_seq": 3}},
    {"event": "user.response", "session_id": "s", "step_id": "t1", "content": {"approved": False}},
    {
        "event": "user.response",
        "session_id": "s",
        "step_id": "t1",
        "content": {"approved": True, "feedback": "go ahead"},
    },
    {"event": "user.response", "session_id": "s", "step_id": "t1", "content": {"confirmed": True}},
]
ODD_VALUES = [None, 0, -1, 2**40, 1.5, True, "", "x" * 200, "s:1", [], {}, {"last_seq": -2}]


def _mutations(message: dict) -> list[dict]:
    """The message with each field dropped, and with each field (and each field of a dict
    content) replaced by each odd value."""
    out = []
    for key, value in message.items():
        if key == "event":
            continue
        out.append({k: v for k, v in message.items() if k != key})
        out += [{**message, key: odd} for odd in ODD_VALUES]
        if isinstance(value, dict):
            for inner in value:
                out += [{**message, key: {**value, inner: odd}} for odd in ODD_VALUES]
    return out


@pytest.mark.parametrize("message", VALID_CLIENT_MESSAGES, ids=lambda m: m["event"])
def test_fast_validator_agrees_with_jsonschema(proto: Protocol, message: dict) -> None:
    """jsonschema-rs decides on the hot path; jsonschema is the reference. They must give
    the same verdict on every valid message and on hundreds of broken variants."""
    cases = [message, *_mutations(message)]
    for case in cases:
        name = case["event"]
        verdict = proto._fast[name].is_valid(case)
        assert verdict == proto._validators[name].is_valid(case), case
    assert len(cases) == 1 or any(not proto._fast[c["event"]].is_valid(c) for c in cases)


@pytest.mark.parametrize("message", VALID_CLIENT_MESSAGES, ids=lambda m: m["event"])
def test_valid_client_messages_decode(proto: Protocol, message: dict) -> None:
    assert proto.decode(json.dumps(message)) == message


def test_unknown_extra_fields_are_accepted(proto: Protocol) -> None:
    message = {
        "event": "user.message",
        "session_id": "s_1",
        "content": "hi",
        "client_version": "9.9",
        "metadata": {"anything": [1, 2]},
        "x": {"y": 1},
    }
    assert proto.decode(json.dumps(message)) == message
    ack = {"event": "user.ack", "content": {"last_seq": 1, "future_field": True}, "extra": None}
    assert proto.decode(json.dumps(ack)) == ack


def test_user_response_accepts_confirmed_as_synonym(proto: Protocol) -> None:
    base = {"event": "user.response", "session_id": "s", "step_id": "t1"}
    yes = proto.decode(json.dumps({**base, "content": {"confirmed": True}}))
    no = proto.decode(json.dumps({**base, "content": {"confirmed": False}}))
    assert response_approved(yes) is True and response_approved(no) is False
    assert response_approved({**base, "content": {"approved": True}}) is True
    assert response_approved({**base, "content": {"approved": False, "confirmed": True}}) is False
    error = decode_error(proto, {**base, "content": {"feedback": "hmm"}})
    assert (error.code, error.path) == ("schema_violation", "/content")
    assert "approved" in error.reason and "confirmed" in error.reason


def test_requested_agent() -> None:
    ask = {"event": "user.create_session"}
    assert requested_agent(ask) is None
    assert requested_agent({**ask, "content": "create_session"}) is None
    assert requested_agent({**ask, "content": {"agent": "weather"}}) == "weather"
    assert requested_agent({**ask, "metadata": {"agent": "greeter"}}) == "greeter"
    both = {**ask, "content": {"agent": "weather"}, "metadata": {"agent": "greeter"}}
    assert requested_agent(both) == "weather"
    assert requested_agent({**ask, "content": {}, "metadata": {"agent": "greeter"}}) == "greeter"
    assert requested_agent({**ask, "content": {"agent": None}}) is None


# -- decode: every error code and path ---------------------------------------------------

BAD = [
    ("not json", "invalid_json", None),
    ('{"event": "user.list_agents",', "invalid_json", None),
    ('{"event": "user.ack", "content": {"last_seq": NaN}}', "invalid_json", None),
    ("[" * 100_000, "invalid_json", None),
    ("[1, 2, 3]", "schema_violation", ""),
    ('"just a string"', "schema_violation", ""),
    ("null", "schema_violation", ""),
    ({"content": "no event"}, "schema_violation", "/event"),
    ({"event": 42}, "schema_violation", "/event"),
    ({"event": None}, "schema_violation", "/event"),
    ({"event": "user.dance"}, "unknown_event", None),
    ({"event": "agent.final_answer", "content": "x"}, "unknown_event", None),
    ({"event": "user.message", "content": "no session"}, "schema_violation", "/session_id"),
    ({"event": "user.message", "session_id": "s_x", "content": 5}, "schema_violation", "/content"),
    ({"event": "user.message", "session_id": "s_x"}, "schema_violation", "/content"),
    (
        {"event": "user.message", "session_id": 7, "content": "hi"},
        "schema_violation",
        "/session_id",
    ),
    ({"event": "user.cancel"}, "schema_violation", "/session_id"),
    ({"event": "user.create_session", "content": 5}, "schema_violation", "/content"),
    (
        {"event": "user.create_session", "content": {"agent": 3}},
        "schema_violation",
        "/content/agent",
    ),
    ({"event": "user.response", "session_id": "s", "content": {}}, "schema_violation", "/step_id"),
    ({"event": "user.ack"}, "schema_violation", "/content"),
    ({"event": "user.ack", "content": {}}, "schema_violation", "/content"),
    ({"event": "user.ack", "content": {"last_seq": -1}}, "schema_violation", "/content/last_seq"),
    (
        {"event": "user.reconnect", "session_id": "s", "content": "x"},
        "schema_violation",
        "/content",
    ),
    (
        {"event": "user.message", "session_id": "s", "content": "hi", "metadata": []},
        "schema_violation",
        "/metadata",
    ),
]


@pytest.mark.parametrize(
    ("frame", "code", "path"), BAD, ids=[f"{c}:{str(f)[:30]}" for f, c, _ in BAD]
)
def test_bad_frame_gets_its_code_and_path(
    proto: Protocol, frame: Any, code: str, path: str | None
) -> None:
    error = decode_error(proto, frame)
    assert error.code == code and error.code in ERROR_CODES
    assert error.path == path
    if path is not None:
        assert error.reason
    assert error.message.endswith(".") and "Traceback" not in error.message
    event = error.to_event()
    proto.check_outbound(event)
    assert event["metadata"]["code"] == code
    assert event["metadata"].get("path") == path


def test_unknown_event_lists_client_events(proto: Protocol) -> None:
    error = decode_error(proto, {"event": "user.dance"})
    assert all(name in error.message for name in CLIENT_EVENTS)


def test_error_carries_the_frames_session_id(proto: Protocol) -> None:
    error = decode_error(proto, {"event": "user.message", "session_id": "s_x", "content": 5})
    assert error.session_id == "s_x"
    assert error.to_event()["session_id"] == "s_x"
    assert (
        decode_error(proto, {"event": "user.message", "session_id": 7, "content": "hi"}).session_id
        is None
    )
    assert decode_error(proto, {"event": "user.nope", "session_id": "s_y"}).session_id == "s_y"
    assert "session_id" not in decode_error(proto, "not json").to_event()


def test_schema_violation_names_the_field_and_what_belongs_there(proto: Protocol) -> None:
    error = decode_error(proto, {"event": "user.message", "content": "no session"})
    assert error.reason == "'session_id' is a required property"
    assert "/session_id" in error.message and "agent.session_created" in error.message


def test_reason_does_not_dump_huge_values(proto: Protocol) -> None:
    frame = {"event": "user.message", "session_id": "s", "content": {"k": "v" * 100_000}}
    error = decode_error(proto, frame)
    assert error.path == "/content"
    assert len(error.reason) < 300 and len(error.message) < 500


def test_two_mib_frame_is_message_too_large(proto: Protocol) -> None:
    big = json.dumps({"event": "user.message", "session_id": "s_x", "content": "x" * (2 * LIMIT)})
    error = decode_error(proto, big)
    assert error.code == "message_too_large" and str(LIMIT) in error.message


def _frame_of_bytes(size: int) -> str:
    """A user.message frame of exactly `size` UTF-8 bytes, mostly 4-byte characters."""
    head, tail = '{"event":"user.message","session_id":"s","content":"', '"}'
    room = size - len(head) - len(tail)
    frame = head + "😀" * (room // 4) + "é" * (room % 4 // 2) + "a" * (room % 2) + tail
    assert len(frame.encode()) == size
    return frame


def test_multibyte_frame_is_measured_in_bytes(proto: Protocol) -> None:
    at_limit = _frame_of_bytes(LIMIT)
    assert len(at_limit) < 300_000 < len(at_limit.encode())  # ~260 K characters, 1 MiB
    assert proto.decode(at_limit)["content"].startswith("😀")
    error = decode_error(proto, _frame_of_bytes(LIMIT + 1))
    assert error.code == "message_too_large"


def test_frame_limit_is_configurable() -> None:
    small = Protocol(max_frame_bytes=64)
    assert small.decode('{"event": "user.list_agents"}')
    assert decode_error(
        small, {"event": "user.message", "session_id": "s", "content": "é" * 30}
    ).code == ("message_too_large")


def test_validators_are_compiled_once(proto: Protocol, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a validator was compiled on the hot path")

    monkeypatch.setattr(protocol, "Draft202012Validator", no_compiling)
    assert proto.decode('{"event": "user.cancel", "session_id": "s"}')
    assert decode_error(proto, {"event": "user.cancel"}).code == "schema_violation"


# -- outbound ------------------------------------------------------------------------------

SERVER_SAMPLES: dict[str, dict[str, Any]] = {
    "system.connected": {
        "content": "Connected to myagent-ws.",
        "metadata": {
            "connection_id": "c_1",
            "server_version": "0.1.0",
            "protocol_version": PROTOCOL_VERSION,
            "agents": ["weather", "greeter"],
        },
    },
    "system.agents": {
        "content": [{"name": "weather", "description": "Weather.", "tools": ["get_weather"]}]
    },
    "system.heartbeat": {"metadata": {"active_sessions": 0, "uptime_s": 1.5}},
    "system.notice": {"content": "Nothing to cancel.", "session_id": "s_1"},
    "system.error": {"content": "Bad.", "metadata": {"code": "invalid_json"}},
    "agent.session_created": {
        "content": {"session_id": "s_1", "agent": "weather"},
        "metadata": {"agent": "weather", "llm": {"provider": "offline", "offline": True}},
    },
    "agent.session_resumed": {"metadata": {"last_seq": 3, "replayed": 2}},
    "agent.thinking": {"content": "Thinking (step 1)…", "metadata": {"step": 1}},
    "agent.tool_call": {
        "step_id": "call_1",
        "content": "Calling tool: get_weather",
        "metadata": {"tool": "get_weather", "args": {"city": "北京"}, "call_id": "call_1"},
    },
    "agent.tool_result": {
        "step_id": "call_1",
        "content": "Sunny, 25°C",
        "metadata": {"tool": "get_weather", "status": "success", "duration_ms": 1.25},
    },
    "agent.partial_answer": {"content": "Sun", "metadata": {"is_final": False}},
    "agent.final_answer": {"content": "Sunny in 北京."},
    "agent.user_confirm": {
        "step_id": "call_2",
        "content": 'The agent wants to run rm(path="/"). Approve?',
        "metadata": {
            "tool": "rm",
            "args": {"path": "/"},
            "call_id": "call_2",
            "expires_at": "2026-01-01T12:05:00.000+00:00",
        },
    },
    "agent.error": {
        "content": "The LLM is unreachable; check the URL.",
        "metadata": {"code": "llm_error"},
    },
    "agent.timeout": {"content": "The turn took longer than 300 s."},
    "agent.interrupted": {"content": "The turn was cancelled."},
    "agent.session_end": {"content": "Session ended.", "metadata": {"reason": "ended"}},
}


def server_event(name: str, seq: int = 1) -> dict[str, Any]:
    event = make_event(name, **SERVER_SAMPLES[name])
    if name.startswith("agent."):
        event.update(session_id="s_1", seq=seq, event_id=f"s_1:{seq}")
    return event


def test_samples_cover_every_server_event() -> None:
    assert set(SERVER_SAMPLES) == SERVER_EVENTS


@pytest.mark.parametrize("name", sorted(SERVER_EVENTS))
def test_every_server_event_passes_check_outbound(proto: Protocol, name: str) -> None:
    event = server_event(name, seq=7)
    proto.check_outbound(event)
    proto.check_outbound(json.loads(encode(event)))


@pytest.mark.parametrize("name", sorted(e for e in SERVER_EVENTS if e.startswith("agent.")))
def test_session_event_without_seq_fails(proto: Protocol, name: str) -> None:
    event = server_event(name)
    del event["seq"]
    with pytest.raises(ProtocolError) as info:
        proto.check_outbound(event)
    assert (info.value.code, info.value.path) == ("schema_violation", "/seq")


@pytest.mark.parametrize(
    ("name", "change", "path"),
    [
        ("agent.final_answer", {"seq": 0, "event_id": "s_1:0"}, "/seq"),
        ("agent.final_answer", {"event_id": "s_1:2"}, "/event_id"),
        ("agent.final_answer", {"timestamp": "yesterday"}, "/timestamp"),
        ("agent.final_answer", {"content": {"text": "not a string"}}, "/content"),
        ("agent.error", {"metadata": {"code": "oops"}}, "/metadata/code"),
        ("system.error", {"metadata": {"code": "oops"}}, "/metadata/code"),
        ("system.error", {"metadata": {}}, "/metadata/code"),
        ("system.notice", {"seq": 1}, "/seq"),
        (
            "agent.tool_result",
            {"metadata": {"tool": "t", "status": "ok", "duration_ms": 1}},
            "/metadata/status",
        ),
        ("system.connected", {"metadata": {"connection_id": "c_1"}}, "/metadata/server_version"),
    ],
)
def test_broken_server_events_fail(proto: Protocol, name: str, change: dict, path: str) -> None:
    event = {**server_event(name), **change}
    with pytest.raises(ProtocolError) as info:
        proto.check_outbound(event)
    assert (info.value.code, info.value.path) == ("schema_violation", path)


def test_check_outbound_rejects_client_and_unknown_events(proto: Protocol) -> None:
    for name in ("user.message", "agent.dance", None):
        with pytest.raises(ProtocolError):
            proto.check_outbound({"event": name, "timestamp": now_iso()})


def test_make_event_sets_timestamp_and_omits_none() -> None:
    event = make_event("agent.final_answer", content="hi", metadata=None, step_id=None)
    assert set(event) == {"event", "content", "timestamp"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["timestamp"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", now_iso())


def test_error_event_validates(proto: Protocol) -> None:
    for code in sorted(ERROR_CODES):
        event = error_event(code, "Something to fix.", session_id="s_1", path=None, detail=3)
        proto.check_outbound(event)
        assert event["metadata"] == {"code": code, "detail": 3} and event["session_id"] == "s_1"
    root = ProtocolError("schema_violation", "Send an object.", path="", reason="not an object")
    assert root.to_event()["metadata"] == {
        "code": "schema_violation",
        "path": "",
        "reason": "not an object",
    }


def test_encode_is_compact_round_trips_and_keeps_non_ascii() -> None:
    event = make_event("agent.final_answer", session_id="s_1", content='北京 ☀️ 25°C "q"\n')
    text = encode(event).decode("utf-8")
    assert json.loads(text) == event
    assert "北京 ☀️" in text and "\\u" not in text
    assert ", " not in text and '": ' not in text


def test_docs_show_a_valid_example_for_every_error_code(proto: Protocol) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text("utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \| `(\{.*\})` \|$", docs, flags=re.M)
    # unauthorized is an HTTP 401 before the upgrade, never a frame: the docs say so.
    assert "| `unauthorized` | never on a WebSocket" in docs
    assert {code for code, _ in rows} == ERROR_CODES - {"unauthorized"}
    for code, frame in rows:
        event = {**json.loads(frame), "timestamp": now_iso()}  # the docs elide timestamps
        proto.check_outbound(event)
        assert event["metadata"]["code"] == code


def test_encode_sends_lone_surrogates_as_ascii_escapes_not_broken_utf8() -> None:
    # json.loads accepts "\ud800" from a client; echoing it must still give a valid frame.
    event = make_event("agent.final_answer", session_id="s_1", content="bad \ud800 text 北京")
    frame = encode(event)
    assert frame.decode("ascii")  # valid UTF-8 (ASCII) on the wire
    assert json.loads(frame)["content"] == "bad \ud800 text 北京"


def test_encoded_frames_weigh_what_they_hold() -> None:
    # The replay buffer counts len(frame); a frame must not hold a larger working buffer.
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = [
            encode(make_event("agent.partial_answer", content=f"token {i}")) for i in range(500)
        ]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 3 * sum(len(f) for f in frames) + 500 * 64
