"""The AG-UI adapter's HTTP endpoint against a real server: POST /agui/{agent} streams SSE
that validates event by event against the official ag-ui-protocol models; a thread keeps
its memory; a confirmation is an interrupt the next run resumes; and the official
@ag-ui/client (Node) completes runs against the endpoint."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from ag_ui.core import BaseEvent

from myagent import Model, ModelReply, create_react_agent
from myagent_ws.agui import AGUI
from myagent_ws.keys import SESSIONS
from myagent_ws.redis_store import RedisStore
from tests.agents import WaitTool, counting_agent, key, looping_agent, waiting_agent
from tests.agui_helpers import (
    agui_socket,
    bookings,
    check,
    check_run,
    error_code,
    outcome,
    parse_sse,
    post,
    resume,
    run_input,
    session_events,
    text_of,
    the_session,
)
from tests.client import http_url
from tests.cluster import REDIS_URL, delete_keys, fresh_prefix, redis_available
from tests.conftest import ASK, BEIJING, BOOKING, ROOT, TOKENS, WEATHER

SLOW = str(ROOT / "tests" / "fixtures" / "slow_agent.py")
NPM_ROOT = Path(sys.prefix) / "npm"
NODE_SCRIPT = ROOT / "tests" / "agui" / "run.mjs"


async def refused(server: Any, agent: str, status: int, **options: Any) -> dict[str, Any]:
    """A request refused before any stream: a JSON error a person can act on."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url(f"/agui/{agent}"), **options) as response,
    ):
        body = await response.json()
        assert response.status == status, body
        assert set(body) == {"error", "message"} and "Traceback" not in body["message"]
        return body


async def test_a_run_streams_valid_events_that_say_what_the_session_did(serve):
    server = await serve(files=(WEATHER,))
    events = await post(server, "weather-assistant", run_input("t1", BEIJING))
    types = [e.type.value for e in events]
    assert types[:6] == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ]
    assert types[-4:] == [
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert events[0].thread_id == "t1" and events[0].protocol_version == "1.0"
    assert outcome(events).type == "success"
    # The same facts as the session's own events.
    session = the_session(server)
    own = {e["event"]: e for e in session_events(server, session.id)}
    call = own["agent.tool_call"]
    start = events[2]
    assert start.tool_call_id == call["step_id"] and start.tool_call_name == "get_weather"
    assert json.loads(events[3].delta) == call["metadata"]["args"] == {"city": "北京"}
    assert events[5].content == own["agent.tool_result"]["content"]
    assert events[5].metadata == {"status": "success"}
    assert text_of(events) == own["agent.final_answer"]["content"] and "北京" in text_of(events)
    assert all(e.timestamp for e in events)


class QuietModel(Model):
    """Answers without streaming a single delta."""

    provider, offline, model_id = "function", True, "quiet"

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        yield ModelReply(text="the whole answer at once")


async def test_an_answer_that_was_not_streamed_is_sent_as_one_message(serve):
    quiet = create_react_agent(name="quiet", tools=[], model=QuietModel())
    server = await serve(files=(), agents=(quiet,))
    events = await post(server, "quiet", run_input("t", "hi"))
    assert [e.type.value for e in events] == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert text_of(events) == "the whole answer at once"


async def test_a_thread_keeps_its_memory_and_other_threads_do_not_share_it(serve):
    server = await serve(files=(), agents=(counting_agent(),))
    first = await post(server, "counter", run_input("a", "first"))
    assert text_of(first) == "1: first"
    # Clients send the whole conversation each time: the thread already has it.
    history = run_input("a", "second")
    history["messages"][:0] = [
        {"id": "u1", "role": "user", "content": "first"},
        {"id": "a1", "role": "assistant", "content": "1: first"},
    ]
    assert text_of(await post(server, "counter", history)) == "2: first | second"
    assert text_of(await post(server, "counter", run_input("b", "third"))) == "1: third"
    assert len(server.app[SESSIONS]) == 2


async def test_a_thread_whose_session_expired_starts_afresh_and_is_forgotten(serve):
    server = await serve(
        files=(), agents=(counting_agent(),), session_ttl_s=0.2, reap_interval_s=0.05
    )
    assert text_of(await post(server, "counter", run_input("t", "one"))) == "1: one"
    adapter = server.app[AGUI]
    for _ in range(100):
        if not adapter.threads:
            break
        await asyncio.sleep(0.05)
    assert not adapter.threads and not adapter.by_session and not server.app[SESSIONS].sessions
    assert text_of(await post(server, "counter", run_input("t", "two"))) == "1: two"


async def test_a_confirmation_is_an_interrupt_that_the_next_run_resumes(serve):
    server = await serve(files=(BOOKING,))
    agent = "booking-assistant"
    first = await post(server, agent, run_input("t", ASK))
    done = outcome(first)
    assert done.type == "interrupt"
    (interrupt,) = done.interrupts
    call = next(e for e in first if e.type.value == "TOOL_CALL_START")
    assert interrupt.tool_call_id == interrupt.id == call.tool_call_id
    assert interrupt.reason == "tool_call" and "book_table" in interrupt.message
    assert interrupt.response_schema["required"] == ["approved"] and interrupt.expires_at
    assert interrupt.metadata["args"] == {"restaurant": "Luigi", "people": 2, "time": "19:30"}
    assert bookings(server) == []  # nothing runs before the answer

    # A new message while the interrupt is open breaks the protocol's rule 4.
    assert error_code(await post(server, agent, run_input("t", "Hello?"))) == "resume_required"
    assert bookings(server) == []

    body = run_input("t", resume=resume(interrupt, approved=True))
    second = await post_resumed(server, agent, body, {interrupt.tool_call_id})
    types = [e.type.value for e in second]
    assert "TOOL_CALL_START" not in types  # the result answers the call of the first run
    result = next(e for e in second if e.type.value == "TOOL_CALL_RESULT")
    assert result.tool_call_id == interrupt.tool_call_id and "booking #1" in result.content
    assert outcome(second).type == "success" and "booking #1" in text_of(second)
    assert len(bookings(server)) == 1

    # The same resume again (a retry) runs nothing twice.
    body["runId"] = uuid.uuid4().hex
    assert error_code(await post(server, agent, body)) == "confirm_not_pending"
    assert len(bookings(server)) == 1


async def post_resumed(server: Any, agent: str, body: Any, calls: set[str]) -> list[BaseEvent]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url(f"/agui/{agent}"), json=body) as response,
    ):
        events = parse_sse(await response.text())
    check_run(events, resumed_calls=calls)
    return events


async def test_threads_and_interrupts_work_on_the_redis_store(serve):
    # There a session nothing follows leaves the process after each run: the next run
    # loads it again, memory and all.
    assert redis_available(), f"no Redis answers at {REDIS_URL} (.ci/run starts one)"
    prefix = fresh_prefix()
    store = RedisStore(REDIS_URL, prefix, ttl_s=60, max_events=1000, max_bytes=1 << 20)
    server = await serve(files=(BOOKING,), agents=(counting_agent(),), store=store)
    try:
        assert text_of(await post(server, "counter", run_input("t", "one"))) == "1: one"
        assert text_of(await post(server, "counter", run_input("t", "two"))) == "2: one | two"
        (interrupt,) = outcome(
            await post(server, "booking-assistant", run_input("b", ASK))
        ).interrupts
        body = run_input("b", resume=resume(interrupt, approved=True))
        assert "booking #1" in text_of(
            await post_resumed(server, "booking-assistant", body, {interrupt.id})
        )
    finally:
        await server.close()
        await delete_keys(prefix)


async def test_a_rejected_or_cancelled_interrupt_runs_nothing(serve):
    server = await serve(files=(BOOKING,))
    agent = "booking-assistant"
    (interrupt,) = outcome(await post(server, agent, run_input("t", ASK))).interrupts
    # An answer that is no answer keeps the interrupt open.
    bad = run_input("t", resume=resume(interrupt, approved="yes"))
    assert error_code(await post(server, agent, bad)) == "invalid_resume"
    no = run_input("t", resume=resume(interrupt, approved=False, feedback="not tonight"))
    events = await post_resumed(server, agent, no, {interrupt.id})
    result = next(e for e in events if e.type.value == "TOOL_CALL_RESULT")
    assert result.metadata == {"status": "rejected"} and outcome(events).type == "success"

    (interrupt,) = outcome(await post(server, agent, run_input("t", ASK))).interrupts
    cancel = run_input("t", resume=[{"interruptId": interrupt.id, "status": "cancelled"}])
    events = await post_resumed(server, agent, cancel, {interrupt.id})
    assert next(e for e in events if e.type.value == "TOOL_CALL_RESULT").metadata == {
        "status": "rejected"
    }
    assert bookings(server) == []
    # Cancelling it again is harmless: a run with nothing to do.
    cancel["runId"] = uuid.uuid4().hex
    events = await post(server, agent, cancel)
    assert [e.type.value for e in events] == ["RUN_STARTED", "RUN_FINISHED"]


async def test_bad_requests_get_a_clear_error_and_no_stack_trace(serve):
    server = await serve(files=(WEATHER,), agents=(looping_agent(),))
    body = await refused(server, "weather-assistant", 400, data=b"{not json")
    assert body["error"] == "invalid_json"
    body = await refused(server, "weather-assistant", 422, json={"threadId": "t"})
    assert body["error"] == "invalid_input" and "runId" in body["message"]
    body = await refused(server, "weather-assistant", 422, json=run_input("t" * 200, "hi"))
    assert "128" in body["message"]
    body = await refused(server, "weather-assistant", 413, data=b" " * (1024**2 + 1))
    assert body["error"] == "message_too_large"
    body = await refused(server, "nobody", 404, json=run_input("t", "hi"))
    assert body["error"] == "agent_not_found" and "weather-assistant" in body["message"]
    # Accepted input that cannot run: RUN_ERROR, with the code.
    no_user = run_input("t", messages=[{"id": "a", "role": "assistant", "content": "hi"}])
    assert error_code(await post(server, "weather-assistant", no_user)) == "no_user_message"
    failed = await post(server, "looper", run_input("t", "go"))
    assert error_code(failed) == "max_steps" and "Traceback" not in failed[-1].message


async def test_a_busy_thread_is_refused_and_a_client_that_leaves_stops_its_run(serve):
    server = await serve(files=(), agents=(waiting_agent(),))
    gate = key()
    async with aiohttp.ClientSession() as http:
        response = await http.post(server.make_url("/agui/waiter"), json=run_input("t", gate))
        await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
        busy = await post(server, "waiter", run_input("t", "again"))
        assert error_code(busy) == "session_busy"
        response.close()  # the client goes away mid-run
        session = the_session(server)
        for _ in range(100):
            if not session.busy:
                break
            await asyncio.sleep(0.05)
        assert [e["event"] for e in session_events(server, session.id)][-1] == "agent.interrupted"
    # The thread goes on.
    WaitTool.gate(second := key()).set()
    assert "gate" in text_of(await post(server, "waiter", run_input("t", second)))


async def test_the_real_server_stops_the_run_of_a_client_that_left(cli_server):
    # The console script's server, unlike the test server, does not cancel a handler
    # whose client left: the stream notices by itself, while the turn is silent.
    server = cli_server(SLOW)
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            http_url(server, "/agui/sleepy"), json=run_input("t", "sleep 30")
        )
        assert (await response.content.readline()).startswith(b'data: {"type":"RUN_STARTED"')
        response.close()
    # The thread takes a new run at once: the 30 s turn was stopped.
    for _ in range(40):
        events = await post(server, "sleepy", run_input("t", "sleep 0"))
        if events[-1].type.value == "RUN_FINISHED":
            break
        assert error_code(events) == "session_busy"
        await asyncio.sleep(0.1)
    assert text_of(events) == "slept 0 s"


async def test_server_shutdown_ends_open_runs_with_run_error(serve):
    server = await serve(files=(), agents=(waiting_agent(),))
    gates = key(), key()
    async with aiohttp.ClientSession() as http:
        response = await http.post(server.make_url("/agui/waiter"), json=run_input("t", gates[0]))
        socket = await agui_socket(http, server)
        await socket.send(run_input("u", gates[1]))
        for gate in gates:
            await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
        closing = asyncio.create_task(server.close())
        events = parse_sse((await response.read()).decode())
        over_socket = await socket.until("RUN_ERROR")
        await closing
    for run in (events, over_socket):
        check_run(run)
        assert error_code(run) == "shutdown"


async def test_auth_and_origins_gate_the_endpoint_like_the_websocket(serve, tokens_file):
    server = await serve(files=(), agents=(counting_agent(),), auth_tokens_file=tokens_file)
    body = await refused(server, "counter", 401, json=run_input("t", "hi"))
    assert body["error"] == "unauthorized"
    alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    assert text_of(await post(server, "counter", run_input("t", "a1"), headers=alice)) == "1: a1"
    # One thread id, two principals: two threads.
    assert text_of(await post(server, "counter", run_input("t", "b1"), headers=bob)) == "1: b1"
    assert text_of(await post(server, "counter", run_input("t", "a2"), headers=alice)) == (
        "2: a1 | a2"
    )
    local = {**alice, "Origin": "http://localhost:3000"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/agui/counter"), json=run_input("t", "a3"), headers=local) as r,
    ):
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert text_of(parse_sse(await r.text())) == "3: a1 | a2 | a3"
    evil = {**alice, "Origin": "https://evil.example"}
    await refused(server, "counter", 403, json=run_input("t", "x"), headers=evil)
    async with aiohttp.ClientSession() as http:
        origin = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
        async with http.options(server.make_url("/agui/counter"), headers=origin) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        evil_origin = {**origin, "Origin": "https://evil.example"}
        async with http.options(server.make_url("/agui/counter"), headers=evil_origin) as r:
            assert r.status == 403


# -- the official client -----------------------------------------------------------------------


async def official_client(server: Any, agent: str, plan: list[dict[str, Any]]) -> list[Any]:
    """Each run of `plan` as the official HttpAgent saw it (events validated again here)."""
    assert (NPM_ROOT / "node_modules" / "@ag-ui" / "client").exists(), (
        "make install puts @ag-ui/client under .venv/npm"
    )
    url = str(server.make_url(f"/agui/{agent}"))
    node = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_SCRIPT),
        str(NPM_ROOT),
        url,
        json.dumps(plan),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 30)
    assert node.returncode == 0, err.decode()
    assert "Agent execution failed" not in err.decode(), err.decode()
    runs = json.loads(out)["runs"]
    for run in runs:
        assert run["error"] is None, run["error"]
        check_run([check(event) for event in run["events"]], {i["id"] for i in interrupts(runs)})
    return runs


def interrupts(runs: list[Any]) -> list[dict[str, Any]]:
    return [i for run in runs for i in run["pendingInterrupts"]]


async def test_the_official_client_completes_runs_on_a_thread(serve):
    server = await serve(files=(WEATHER,))
    (run,) = await official_client(server, "weather-assistant", [{"message": BEIJING}])
    assert run["events"][-1]["type"] == "RUN_FINISHED"
    answer = run["messages"][-1]
    assert answer["role"] == "assistant" and "北京" in answer["content"]
    assert any(m["role"] == "tool" for m in run["messages"])
    assert the_session(server).agent_name == "weather-assistant"


async def test_the_official_client_resumes_an_interrupt(serve):
    server = await serve(files=(BOOKING,))
    asked, answered = await official_client(
        server, "booking-assistant", [{"message": ASK}, {"resume": {"approved": True}}]
    )
    (pending,) = asked["pendingInterrupts"]
    assert pending["reason"] == "tool_call" and pending["toolCallId"]
    assert answered["pendingInterrupts"] == []
    assert answered["events"][-1]["outcome"] == {"type": "success"}
    assert "booking #1" in answered["messages"][-1]["content"]
    assert len(bookings(server)) == 1
