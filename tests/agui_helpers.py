"""What the AG-UI tests share (test_agui_sse.py, test_agui_socket.py): every event a
test receives is checked against the official ag-ui-protocol models (`check`), every run
against AG-UI's ordering rules (`check_run`), so the suites double as conformance tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
from ag_ui.core import BaseEvent, Event, Interrupt
from pydantic import BaseModel, TypeAdapter

from myagent_ws.keys import SESSIONS
from tests.client import http_url

EVENT = TypeAdapter(Event)


# -- checking events -------------------------------------------------------------------------


def no_extras(model: BaseModel) -> None:
    """The models keep unknown fields (extra="allow"): a valid event has none, anywhere."""
    assert not model.model_extra, f"{type(model).__name__} has unknown fields {model.model_extra}"
    for value in model.__dict__.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                no_extras(item)


def check(raw: dict[str, Any]) -> BaseEvent:
    """One event as sent: valid for the package's Event union, its class the one its
    type names, nothing unknown, and the same JSON when the model serialises it again."""
    event = EVENT.validate_python(raw)
    assert event.type.value == raw["type"]
    assert type(event).__name__ == "".join(w.title() for w in raw["type"].split("_")) + "Event"
    no_extras(event)
    assert json.loads(event.model_dump_json(by_alias=True)) == raw
    return event


def check_run(events: list[BaseEvent], resumed_calls: set[str] = frozenset()) -> None:
    """One run's order: RUN_STARTED first, one RUN_FINISHED or RUN_ERROR last; messages,
    tool calls and steps open and close in pairs; each tool result answers a call of this
    run (or one of `resumed_calls`, whose proposal came in the run an interrupt ended)."""
    types = [e.type.value for e in events]
    assert types[0] == "RUN_STARTED", types
    assert types[-1] in ("RUN_FINISHED", "RUN_ERROR"), types
    assert sum(t in ("RUN_FINISHED", "RUN_ERROR") for t in types) == 1, types
    assert types.count("RUN_STARTED") == 1
    run_id = events[0].run_id
    messages: set[str] = set()
    calls: dict[str, str] = {}
    ended_calls = set(resumed_calls)
    steps: set[str] = set()
    for event in events:
        match event.type.value:
            case "TEXT_MESSAGE_START":
                assert event.message_id not in messages
                messages.add(event.message_id)
            case "TEXT_MESSAGE_CONTENT":
                assert event.message_id in messages
            case "TEXT_MESSAGE_END":
                messages.remove(event.message_id)
            case "TOOL_CALL_START":
                assert event.tool_call_id not in calls
                calls[event.tool_call_id] = ""
            case "TOOL_CALL_ARGS":
                calls[event.tool_call_id] += event.delta
            case "TOOL_CALL_END":
                json.loads(calls[event.tool_call_id])  # whole JSON arguments
                ended_calls.add(event.tool_call_id)
            case "TOOL_CALL_RESULT":
                assert event.tool_call_id in ended_calls, event
            case "STEP_STARTED":
                assert event.step_name not in steps
                steps.add(event.step_name)
            case "STEP_FINISHED":
                steps.remove(event.step_name)
            case "RUN_FINISHED":
                assert event.run_id == run_id
        if event.metadata and "run_id" in event.metadata:
            assert event.metadata["run_id"] == run_id
    if types[-1] == "RUN_FINISHED":
        assert not messages and not steps, (messages, steps)


def text_of(events: list[BaseEvent]) -> str:
    return "".join(e.delta for e in events if e.type.value == "TEXT_MESSAGE_CONTENT")


def outcome(events: list[BaseEvent]) -> Any:
    assert events[-1].type.value == "RUN_FINISHED", events[-1]
    return events[-1].outcome


def error_code(events: list[BaseEvent]) -> str | None:
    assert events[-1].type.value == "RUN_ERROR", events[-1]
    return events[-1].code


def run_input(thread: str, text: str | None = None, **fields: Any) -> dict[str, Any]:
    messages = [{"id": uuid.uuid4().hex, "role": "user", "content": text}] if text else []
    return {"threadId": thread, "runId": uuid.uuid4().hex, "messages": messages, **fields}


def resume(interrupt: Interrupt, **payload: Any) -> list[dict[str, Any]]:
    return [{"interruptId": interrupt.id, "status": "resolved", "payload": payload}]


# -- the SSE endpoint ------------------------------------------------------------------------


def parse_sse(text: str) -> list[BaseEvent]:
    """Every SSE message the server sent, as EventEncoder frames them: `data: <json>`."""
    assert text.endswith("\n\n"), text[-200:]
    frames = text[:-2].split("\n\n")
    assert all(f.startswith("data: ") and "\n" not in f for f in frames), frames
    return [check(json.loads(f[len("data: ") :])) for f in frames]


async def post(server: Any, agent: str, body: Any, **options: Any) -> list[BaseEvent]:
    """One run: its checked events."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(http_url(server, f"/agui/{agent}"), json=body, **options) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream"
        events = parse_sse(await response.text())
    check_run(events)
    return events


def session_events(server: Any, session_id: str) -> list[dict[str, Any]]:
    """The session's own events, from its replay buffer."""
    session = server.app[SESSIONS].sessions[session_id]
    buffer = session.buffer
    return [json.loads(buffer.get(seq)) for seq in range(buffer.first_seq, buffer.last_seq + 1)]


def the_session(server: Any) -> Any:
    (session,) = server.app[SESSIONS].sessions.values()
    return session


def bookings(server: Any) -> list[dict[str, Any]]:
    return the_session(server).agent.tools[0].bookings


# -- the ag-ui WebSocket binding -------------------------------------------------------------


class AguiSocket:
    """A client of the `ag-ui` subprotocol: every frame checked against the models."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def recv(self) -> BaseEvent:
        msg = await self.ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        raw = json.loads(msg.data)
        self.frames.append(raw)
        return check(raw)

    async def until(self, *types: str) -> list[BaseEvent]:
        """Events up to and including the first of one of `types`."""
        events = []
        while not events or events[-1].type.value not in types:
            events.append(await self.recv())
        return events


async def agui_socket(http: aiohttp.ClientSession, server: Any, *offers: str) -> AguiSocket:
    ws = await http.ws_connect(server.make_url("/"), protocols=offers or ("ag-ui",))
    assert ws.protocol == "ag-ui"
    return AguiSocket(ws)
