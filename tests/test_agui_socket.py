"""The `ag-ui` WebSocket binding against a real server: the same events as POST, each with
our seq; a client resumes by (seq, part) exactly once; a resume past the replay buffer says
so; the token rides as a subprotocol."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.agents import WaitTool, counting_agent, key, waiting_agent
from tests.agui_helpers import (
    agui_socket,
    check_run,
    error_code,
    outcome,
    post,
    resume,
    run_input,
    session_events,
    text_of,
    the_session,
)
from tests.conftest import ASK, BEIJING, BOOKING, TOKENS, WEATHER


def position(raw: dict[str, Any]) -> tuple[int, int]:
    return raw["metadata"]["seq"], raw["metadata"]["part"]


async def test_the_websocket_binding_sends_the_same_events_with_seq(serve):
    server = await serve(files=(WEATHER, BOOKING), agents=(waiting_agent(),))
    sse = await post(server, "weather-assistant", run_input("s", BEIJING))
    async with aiohttp.ClientSession() as http:
        client = await agui_socket(http, server)
        body = run_input("w", BEIJING, forwardedProps={"agent": "weather-assistant"})
        await client.send(body)
        events = await client.until("RUN_FINISHED", "RUN_ERROR")
        check_run(events)
        assert [e.type for e in events] == [e.type for e in sse]
        assert text_of(events) == text_of(sse)
        positions = [position(raw) for raw in client.frames]
        assert positions == sorted(set(positions))  # strictly increasing: each frame once
        session_id = client.frames[0]["metadata"]["session_id"]
        own = {e["seq"]: e["event"] for e in session_events(server, session_id)}
        assert own[position(client.frames[2])[0]] == "agent.tool_call"  # TOOL_CALL_START
        # Frames it cannot take get RUN_ERROR (no seq: not session events); it stays open.
        await client.send({"event": "user.list_agents"})
        assert error_code([await client.recv()]) == "unknown_event"
        await client.send({"threadId": "w"})
        assert error_code([await client.recv()]) == "invalid_input"
        await client.send(run_input("x", "hi"))  # two agents: which one?
        refusal = [await client.recv(), await client.recv()]
        assert error_code(refusal) == "agent_required" and "metadata" not in client.frames[-1]
        # An interrupt, answered on the same socket.
        booking = {"agent": "booking-assistant"}
        await client.send(run_input("b", ASK, forwardedProps=booking))
        interrupted = await client.until("RUN_FINISHED")
        (interrupt,) = outcome(interrupted).interrupts
        await client.send(
            run_input("b", resume=resume(interrupt, approved=True), forwardedProps=booking)
        )
        answered = await client.until("RUN_FINISHED")
        check_run(answered, resumed_calls={interrupt.id})
        assert "booking #1" in text_of(answered)
        # user.cancel stops a run: RUN_FINISHED with the cancelled outcome.
        gate = key()
        await client.send(run_input("c", gate, forwardedProps={"agent": "waiter"}))
        await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
        started = await client.recv()
        await client.send({"event": "user.cancel", "session_id": started.metadata["session_id"]})
        cancelled = [started, *await client.until("RUN_FINISHED")]
        check_run(cancelled)
        assert outcome(cancelled).type == "cancelled"
        await client.ws.close()


async def test_a_websocket_client_resumes_by_seq_exactly_once(serve):
    server = await serve(files=(), agents=(waiting_agent(),))
    gate = key()
    async with aiohttp.ClientSession() as http:
        first = await agui_socket(http, server)
        await first.send(run_input("t", gate))
        # Cut the link in the middle of one session event's frames (START, ARGS, END).
        await first.until("TOOL_CALL_ARGS")
        await first.ws.close()
        WaitTool.gate(gate).set()
        session = the_session(server)
        async with asyncio.timeout(5):
            while session.busy:
                await asyncio.sleep(0.02)
        seq, part = position(first.frames[-1])
        second = await agui_socket(http, server)
        await second.send(
            {
                "event": "user.reconnect",
                "session_id": session.id,
                "content": {"last_seq": seq, "last_part": part},
            }
        )
        rest = await second.until("RUN_FINISHED")
        assert rest[0].type.value == "TOOL_CALL_END"
        # Everything again, from the start: the same frames, byte for byte.
        third = await agui_socket(http, server)
        await third.send(
            {"event": "user.reconnect", "session_id": session.id, "content": {"last_seq": 0}}
        )
        everything = await third.until("RUN_FINISHED")
        assert first.frames + second.frames == third.frames
        check_run(everything)
        assert "gate" in text_of(everything)
        # Not this principal's session, or none: RUN_ERROR, and nothing replayed.
        await third.send({"event": "user.reconnect", "session_id": "s_nope"})
        assert error_code([await third.recv()]) == "session_not_found"


async def test_a_resume_past_the_replay_buffer_says_so(serve):
    server = await serve(files=(WEATHER,), replay_buffer=4)
    async with aiohttp.ClientSession() as http:
        first = await agui_socket(http, server)
        await first.send(run_input("t", BEIJING))
        await first.until("RUN_FINISHED")
        session_id = first.frames[0]["metadata"]["session_id"]
        await first.ws.close()
        second = await agui_socket(http, server)
        await second.send({"event": "user.reconnect", "session_id": session_id})
        assert error_code([await second.recv()]) == "replay_gap"
        # Live frames follow: the next run on the thread arrives whole.
        await second.send(run_input("t", BEIJING))
        check_run(await second.until("RUN_FINISHED"))


async def test_the_websocket_binding_takes_the_token_as_a_subprotocol(serve, tokens_file):
    server = await serve(files=(), agents=(counting_agent(),), auth_tokens_file=tokens_file)
    async with aiohttp.ClientSession() as http:
        client = await agui_socket(http, server, "ag-ui", f"bearer.{TOKENS['alice']}")
        await client.send(run_input("t", "hello"))
        assert text_of(await client.until("RUN_FINISHED")) == "1: hello"
        alice_session = client.frames[-1]["metadata"]["session_id"]
        bob = await agui_socket(http, server, "ag-ui", f"bearer.{TOKENS['bob']}")
        await bob.send({"event": "user.reconnect", "session_id": alice_session})
        assert error_code([await bob.recv()]) == "forbidden"
        upgrade = http.ws_connect(server.make_url("/"), protocols=("ag-ui", "bearer.wrong"))
        try:
            await upgrade
            raise AssertionError("a wrong token was let in")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
