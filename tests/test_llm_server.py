"""The server on the real `openai` client against a local OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import json

from myagent_ws.app import model_for
from myagent_ws.settings import Settings
from tests.client import TERMINAL, names
from tests.fake_openai import Hang, Status, Truncated, tool_calls


def openai_model(fake, **settings) -> object:
    return model_for(
        Settings(llm_base_url=fake.base_url, llm_api_key="sk-test", model="fake-1", **settings)
    )


async def test_turn_over_openai_streams_tool_calls_and_answer(serve, connect, fake_openai):
    fake_openai.script += [
        tool_calls(
            ("call_a", "get_weather", json.dumps({"city": "上海"})),
            ("call_b", "get_city_info", json.dumps({"city": "Shanghai"})),
        ),
        "上海今天多云，是中国最大的城市。",
    ]
    server = await serve(model=openai_model(fake_openai))
    client = await connect(server)
    await client.send({"event": "user.create_session"})
    created = await client.expect("agent.session_created")
    llm = created["metadata"]["llm"]
    assert llm["provider"] == "openai" and llm["model"] == "fake-1" and llm["offline"] is False

    events = await client.turn(created["session_id"], "上海怎么样？")
    calls = [e for e in events if e["event"] == "agent.tool_call"]
    results = [e for e in events if e["event"] == "agent.tool_result"]
    assert [c["metadata"]["tool"] for c in calls] == ["get_weather", "get_city_info"]
    assert [c["step_id"] for c in calls] == ["call_a", "call_b"]
    assert calls[0]["metadata"]["args"] == {"city": "上海"}
    assert [r["step_id"] for r in results] == ["call_a", "call_b"]
    assert all(r["metadata"]["status"] == "success" for r in results)
    assert events[-1]["event"] == "agent.final_answer"
    assert events[-1]["content"] == "上海今天多云，是中国最大的城市。"
    assert names(events).count("agent.thinking") == 2

    first, second = fake_openai.requests
    assert first["model"] == "fake-1" and first["stream"] is True
    assert {t["function"]["name"] for t in first["tools"]} == {"get_weather", "get_city_info"}
    assert first["messages"][0]["role"] == "system"
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_a", "call_b"]


async def test_llm_failure_is_llm_error_and_session_stays_usable(serve, connect, fake_openai):
    fake_openai.script += [Status(500, "upstream exploded"), "Recovered."]
    server = await serve(model=openai_model(fake_openai))
    client = await connect(server)
    sid = await client.create_session()
    failed = await client.turn(sid, "hello")
    assert failed[-1]["event"] == "agent.error"
    assert failed[-1]["metadata"]["code"] == "llm_error"
    assert "500" in failed[-1]["content"] and "Traceback" not in failed[-1]["content"]
    ok = await client.turn(sid, "hello again")
    assert ok[-1]["event"] == "agent.final_answer" and ok[-1]["content"] == "Recovered."
    # The failed turn left no trace in the conversation sent to the model.
    users = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["hello again"]


async def test_stream_without_finish_reason_is_llm_error_not_an_empty_answer(
    serve, connect, fake_openai
):
    """llama.cpp on context overflow: HTTP 200, a few chunks, then the stream just closes."""
    fake_openai.script += [Truncated(text="Partial"), "Recovered."]
    server = await serve(model=openai_model(fake_openai))
    client = await connect(server)
    sid = await client.create_session()
    failed = await client.turn(sid, "hello")
    assert [e["event"] for e in failed if e["event"] in TERMINAL] == ["agent.error"]
    assert "agent.final_answer" not in names(failed)
    error = failed[-1]
    assert error["metadata"]["code"] == "llm_error"
    assert "finish_reason" in error["content"] and "Traceback" not in error["content"]
    ok = await client.turn(sid, "hello again")
    assert [e["event"] for e in ok if e["event"] in TERMINAL] == ["agent.final_answer"]
    assert ok[-1]["content"] == "Recovered."
    users = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["hello again"]


async def test_unreachable_endpoint_is_llm_error_naming_the_setting(serve, connect):
    """The client is told what failed and where to look; with --debug, also the setting."""
    from tests.conftest import free_port

    model = model_for(Settings(llm_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    for debug in (False, True):
        client = await connect(await serve(model=model, debug=debug))
        sid = await client.create_session()
        events = await client.turn(sid, "hello")
        assert events[-1]["metadata"]["code"] == "llm_error"
        content = events[-1]["content"]
        assert content.startswith("Could not reach the LLM endpoint.")
        assert ("OPENAI_BASE_URL / --llm-base-url" in content) is debug


def test_cli_uses_the_configured_endpoint(cli_server, fake_openai):
    server = cli_server(
        "examples/ws_weather_agent.py", "--llm-base-url", fake_openai.base_url, "--model", "fake-2"
    )
    output = server.stop()
    assert "fake-2" in output and fake_openai.base_url in output
    assert "offline" not in output


async def test_an_llm_that_stops_mid_stream_ends_the_turn_once_and_cancel_still_interrupts(
    serve, connect, fake_openai
):
    """The LLM timeout cancels the stream itself (one timer per request): the turn ends
    with exactly one agent.error llm_error, nothing follows it, and the session goes on. A
    user.cancel during a stream is still agent.interrupted, not a timeout."""
    fake_openai.script += [Hang(text_first="Part"), "Recovered.", Hang(text_first="Again")]
    client = await connect(await serve(model=openai_model(fake_openai, llm_timeout_s=0.3)))
    sid = await client.create_session()
    events = await client.turn(sid, "hello")
    assert [e["event"] for e in events if e["event"] in TERMINAL] == ["agent.error"]
    assert events[-1]["metadata"]["code"] == "llm_error"
    assert "did not answer within 0.3 s" in events[-1]["content"]
    assert (await client.turn(sid, "again"))[-1]["content"] == "Recovered."
    await client.send({"event": "user.message", "session_id": sid, "content": "and again"})
    await client.expect("agent.partial_answer")
    await client.send({"event": "user.cancel", "session_id": sid})
    ended = await client.expect("agent.interrupted")
    await asyncio.sleep(0.5)  # past the LLM timeout: no second terminal event comes
    await client.send({"event": "user.list_agents"})
    assert (await client.recv())["event"] == "system.agents"
    assert ended["seq"] == client.last_seq[sid]
