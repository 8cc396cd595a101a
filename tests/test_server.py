"""The WebSocket endpoint end to end: real server on loopback, real aiohttp clients."""

from __future__ import annotations

import asyncio

import aiohttp

from myagent_ws.keys import SESSIONS, STORE
from tests.agents import WaitTool, counting_agent, key, looping_agent, waiting_agent
from tests.client import TERMINAL, names
from tests.conftest import GREETER, WEATHER


async def test_connected_is_first_and_lists_agents(serve, connect):
    server = await serve(files=(WEATHER, GREETER))
    client = await connect(server)
    connected = client.received[0]
    assert connected["metadata"]["agents"] == ["weather-assistant", "greeter"]
    assert connected["metadata"]["protocol_version"] == 1
    assert connected["metadata"]["connection_id"].startswith("c_")
    assert "seq" not in connected


async def test_weather_turn_streams_every_step_on_offline_model(serve, connect):
    server = await serve()
    client = await connect(server)
    await client.send({"event": "user.create_session"})
    created = await client.expect("agent.session_created")
    sid = created["session_id"]
    assert created["seq"] == 1 and created["event_id"] == f"{sid}:1"
    assert created["content"] == {"session_id": sid, "agent": "weather-assistant"}
    assert created["metadata"]["llm"]["offline"] is True

    events = await client.turn(sid, "北京今天天气怎么样？")
    kinds = names(events)
    assert kinds[0] == "agent.thinking"
    assert kinds[-1] == "agent.final_answer"
    call = next(e for e in events if e["event"] == "agent.tool_call")
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert call["metadata"]["tool"] == "get_weather"
    assert call["metadata"]["args"] == {"city": "北京"}
    assert "get_weather" in call["content"]
    assert result["step_id"] == call["step_id"]
    assert result["metadata"]["status"] == "success"
    assert kinds.index("agent.tool_call") < kinds.index("agent.tool_result")
    partials = [e["content"] for e in events if e["event"] == "agent.partial_answer"]
    assert len(partials) >= 3
    assert "".join(partials) == events[-1]["content"]
    assert "北京" in events[-1]["content"]
    assert [e["seq"] for e in events] == list(range(2, 2 + len(events)))
    assert sum(e["event"] in TERMINAL for e in events) == 1


async def test_multi_turn_memory_is_per_session(serve, connect):
    server = await serve(files=(), agents=(counting_agent(),))
    client = await connect(server)
    a = await client.create_session()
    b = await client.create_session()
    assert (await client.turn(a, "one"))[-1]["content"] == "1: one"
    assert (await client.turn(a, "two"))[-1]["content"] == "2: one | two"
    assert (await client.turn(b, "other"))[-1]["content"] == "1: other"


async def test_cancel_mid_tool_call_interrupts_and_session_stays_usable(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    client = await connect(server)
    sid = await client.create_session()
    gate = key()
    await client.send({"event": "user.message", "session_id": sid, "content": gate})
    await client.expect("agent.tool_call", session_id=sid)
    await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
    await client.send({"event": "user.cancel", "session_id": sid})
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.interrupted"
    assert "agent.tool_result" not in names(events)
    # The session answers the next turn (memory was rolled back, no dangling tool call).
    gate2 = key()
    WaitTool.gate(gate2).set()
    events = await client.turn(sid, gate2)
    assert events[-1]["event"] == "agent.final_answer"
    assert events[-1]["content"] == f"done: gate {gate2} opened"


async def test_cancel_with_nothing_running_gets_a_notice(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    await client.send({"event": "user.cancel", "session_id": sid})
    notice = await client.expect("system.notice")
    assert "nothing to cancel" in notice["content"]


async def test_two_sessions_on_one_connection_run_concurrently(serve, connect):
    """Each turn waits in its tool for a gate that only the other turn's progress opens."""
    server = await serve(files=(), agents=(waiting_agent(),))
    client = await connect(server)
    a, b = await client.create_session(), await client.create_session()
    ga, gb = key(), key()
    await client.send({"event": "user.message", "session_id": a, "content": ga})
    await client.send({"event": "user.message", "session_id": b, "content": gb})
    # Both turns are inside their tools at the same time.
    await asyncio.wait_for(WaitTool.entered(ga).wait(), 5)
    await asyncio.wait_for(WaitTool.entered(gb).wait(), 5)
    WaitTool.gate(gb).set()
    assert (await client.until_terminal(b))[-1]["event"] == "agent.final_answer"
    WaitTool.gate(ga).set()
    assert (await client.until_terminal(a))[-1]["event"] == "agent.final_answer"


async def test_second_message_while_running_is_session_busy(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    client = await connect(server)
    sid = await client.create_session()
    gate = key()
    await client.send({"event": "user.message", "session_id": sid, "content": gate})
    await client.expect("agent.tool_call")
    await client.send({"event": "user.message", "session_id": sid, "content": "again"})
    busy = await client.error("session_busy")
    assert busy["session_id"] == sid
    WaitTool.gate(gate).set()
    assert (await client.until_terminal(sid))[-1]["event"] == "agent.final_answer"


async def test_fifty_concurrent_connections_each_complete_a_turn(serve, connect):
    server = await serve()

    async def one(i: int) -> str:
        client = await connect(server)
        sid = await client.create_session()
        events = await client.turn(sid, "What's the weather in Paris?", timeout=30)
        await client.ws.close()
        return events[-1]["event"]

    outcomes = await asyncio.gather(*(one(i) for i in range(50)))
    assert outcomes == ["agent.final_answer"] * 50


async def test_too_many_sessions_per_connection(serve, connect):
    server = await serve(max_sessions_per_connection=2)
    client = await connect(server)
    await client.create_session()
    await client.create_session()
    await client.send({"event": "user.create_session"})
    await client.error("too_many_sessions")
    # Another connection has its own allowance.
    other = await connect(server)
    assert await other.create_session()


async def test_agent_by_name_and_unknown_agent(serve, connect):
    server = await serve(files=(WEATHER, GREETER))
    client = await connect(server)
    await client.send({"event": "user.create_session", "content": {"agent": "greeter"}})
    created = await client.expect("agent.session_created")
    assert created["content"]["agent"] == "greeter"
    await client.send({"event": "user.create_session", "metadata": {"agent": "weather-assistant"}})
    assert (await client.expect("agent.session_created"))["metadata"][
        "agent"
    ] == "weather-assistant"
    await client.send({"event": "user.create_session", "content": {"agent": "nosuch"}})
    error = await client.error("agent_not_found")
    assert "weather-assistant" in error["content"] and "greeter" in error["content"]


async def test_no_name_with_several_agents_is_agent_required_unless_default(serve, connect):
    server = await serve(files=(WEATHER, GREETER))
    client = await connect(server)
    await client.send({"event": "user.create_session", "content": "create_session"})
    error = await client.error("agent_required")
    assert "greeter" in error["content"]
    server2 = await serve(files=(WEATHER, GREETER), default="greeter")
    client2 = await connect(server2)
    await client2.send({"event": "user.create_session"})
    assert (await client2.expect("agent.session_created"))["content"]["agent"] == "greeter"


async def test_list_agents(serve, connect):
    server = await serve(files=(WEATHER, GREETER))
    client = await connect(server)
    await client.send({"event": "user.list_agents"})
    agents = (await client.expect("system.agents"))["content"]
    assert [a["name"] for a in agents] == ["weather-assistant", "greeter"]
    assert agents[0]["tools"] == ["get_weather", "get_city_info"]
    assert agents[1]["tools"] == ["greet"]


async def test_end_session_then_it_is_gone(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    await client.send({"event": "user.end_session", "session_id": sid})
    end = await client.expect("agent.session_end")
    assert end["session_id"] == sid
    await client.send({"event": "user.message", "session_id": sid, "content": "hi"})
    await client.error("session_not_found")
    assert server.app[SESSIONS].sessions == {}


async def test_other_connections_cannot_use_a_session(serve, connect):
    server = await serve()
    owner, stranger = await connect(server), await connect(server)
    sid = await owner.create_session()
    await stranger.send({"event": "user.message", "session_id": sid, "content": "hi"})
    await stranger.error("session_not_found")


async def test_turn_timeout(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), turn_timeout_s=0.3)
    client = await connect(server)
    sid = await client.create_session()
    events = await client.turn(sid, key())
    assert events[-1]["event"] == "agent.timeout"
    assert events[-1]["metadata"]["timeout_s"] == 0.3


async def test_max_steps_is_an_agent_error(serve, connect):
    server = await serve(files=(), agents=(looping_agent(max_steps=3),))
    client = await connect(server)
    sid = await client.create_session()
    events = await client.turn(sid, "go")
    assert events[-1]["event"] == "agent.error"
    assert events[-1]["metadata"]["code"] == "max_steps"
    assert names(events).count("agent.thinking") == 3
    results = [e for e in events if e["event"] == "agent.tool_result"]
    assert results and all(r["metadata"]["status"] == "error" for r in results)


async def test_heartbeat_reaches_every_connection(serve, connect):
    server = await serve(heartbeat_s=0.1)
    client = await connect(server)
    sid = await client.create_session()
    beat = await client.expect("system.heartbeat", timeout=3)
    assert beat["metadata"]["active_sessions"] == 1
    assert sid


async def test_disconnect_mid_turn_leaks_nothing_and_session_expires(serve, connect):
    server = await serve(
        files=(), agents=(waiting_agent(),), session_ttl_s=0.2, reap_interval_s=0.05
    )
    manager = server.app[SESSIONS]
    client = await connect(server)
    sid = await client.create_session()
    gate = key()
    await client.send({"event": "user.message", "session_id": sid, "content": gate})
    await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
    turn = manager.sessions[sid].turn.task
    await client.ws.close()
    # The turn outlives the connection (a reconnect could pick it up), then ends.
    WaitTool.gate(gate).set()
    await asyncio.wait_for(turn, 5)
    async with asyncio.timeout(5):
        while manager.sessions:
            await asyncio.sleep(0.05)
    assert len(server.app[STORE]) == 0
    assert manager.attached == {}


async def test_reconnect_replays_missed_events(serve, connect):
    server = await serve()
    first = await connect(server)
    sid = await first.create_session()
    await first.send(
        {"event": "user.message", "session_id": sid, "content": "What's the weather in Tokyo?"}
    )
    await first.expect("agent.thinking")
    await first.ws.close()
    await asyncio.sleep(0.3)  # the turn finishes with nobody attached
    second = await connect(server)
    await second.reconnect(sid, last_seq=1)
    replayed = []
    while (event := await second.recv())["event"] != "agent.session_resumed":
        replayed.append(event)
    assert [e["seq"] for e in replayed] == list(range(2, 2 + len(replayed)))
    assert replayed[-1]["event"] == "agent.final_answer"
    assert event["metadata"] == {
        "last_seq": 1,
        "replayed": len(replayed),
        "pending_confirm": [],
        "connection_id": second.received[0]["metadata"]["connection_id"],  # who reconnected
    }
    assert event["seq"] == replayed[-1]["seq"] + 1
    # Live events continue on the new connection.
    assert (await second.turn(sid, "Tokyo again"))[-1]["event"] == "agent.final_answer"


async def test_reconnect_mid_turn_continues_without_gap_or_repeat(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    first = await connect(server)
    sid = await first.create_session()
    gate = key()
    await first.send({"event": "user.message", "session_id": sid, "content": gate})
    await first.expect("agent.thinking")  # seq 2; the tool call (3) may or may not be seen
    await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
    await first.ws.close()
    second = await connect(server)
    await second.reconnect(sid, last_seq=2)
    tool_call = await second.recv()
    assert (tool_call["event"], tool_call["seq"]) == ("agent.tool_call", 3)
    assert (await second.recv())["event"] == "agent.session_resumed"
    WaitTool.gate(gate).set()
    events = await second.until_terminal(sid)
    assert names(events)[0] == "agent.tool_result" and events[-1]["event"] == "agent.final_answer"


async def test_shutdown_ends_sessions_and_interrupts_turns(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    client = await connect(server)
    sid = await client.create_session()
    await client.send({"event": "user.message", "session_id": sid, "content": key()})
    await client.expect("agent.tool_call")
    closing = asyncio.create_task(server.close())
    interrupted = await client.expect("agent.interrupted")
    end = await client.expect("agent.session_end")
    assert interrupted["seq"] < end["seq"]
    closed = await client.ws.receive(timeout=5)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await closing


async def test_http_endpoints(serve, connect):
    server = await serve(files=(WEATHER, GREETER))
    client = await connect(server)
    await client.create_session("greeter")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/health")) as response:
            health = await response.json()
        async with http.get(server.make_url("/agents")) as response:
            agents = await response.json()
        async with http.get(server.make_url("/")) as response:
            page = await response.text()
    assert health["status"] == "ok"
    assert health["connections"] == 1 and health["sessions"] == 1
    assert health["agents"] == ["weather-assistant", "greeter"]
    assert [a["name"] for a in agents["agents"]] == ["weather-assistant", "greeter"]
    assert "weather-assistant" in page


async def test_permessage_deflate_only_when_turned_on(serve) -> None:
    """Browsers offer permessage-deflate; the server declines by default (it measured +55%
    CPU per event) and accepts with ws_compression, where a whole turn still streams."""
    for setting, expected in ((False, 0), (True, 15)):
        server = await serve(ws_compression=setting)
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.make_url("/"), compress=15) as ws:
                assert ws.compress == expected
                assert (await ws.receive_json())["event"] == "system.connected"
                await ws.send_json({"event": "user.create_session"})
                sid = (await ws.receive_json())["session_id"]
                await ws.send_json(
                    {"event": "user.message", "session_id": sid, "content": "北京今天天气怎么样？"}
                )
                events = []
                while not events or events[-1] != "agent.final_answer":
                    events.append((await ws.receive_json(timeout=10))["event"])
                assert "agent.partial_answer" in events
