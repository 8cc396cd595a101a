"""OpenAIModel against a local fake OpenAI endpoint: streaming, tool-call assembly, and
every way the endpoint can fail turning into an LLMError a person can act on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from myagent import (
    BaseTool,
    FinalAnswer,
    LLMError,
    ModelReply,
    OpenAIModel,
    TextDelta,
    ToolCall,
    ToolFinished,
    ToolResult,
    create_react_agent,
)
from tests.fake_openai import (
    FakeOpenAI,
    Hang,
    Raw,
    Status,
    Text,
    Truncated,
    fake_openai,
    tool_calls,
)

__all__ = ["fake_openai"]  # the fixture, used by name


class Weather(BaseTool):
    name = "get_weather"
    description = "Get the weather in a city."
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }

    async def execute(self, city: str) -> ToolResult:
        return ToolResult(output=f"{city}: sunny")


class Info(BaseTool):
    name = "get_city_info"
    description = "Get facts about a city."
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }

    async def execute(self, city: str) -> ToolResult:
        return ToolResult(output=f"{city}: big")


@pytest.fixture
async def model(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel(model="fake-model", api_key="sk-test", base_url=fake_openai.base_url)
    yield model
    await model.aclose()


async def items(model: OpenAIModel, messages: list[dict[str, Any]], tools: list[Any]) -> list:
    return [item async for item in model.stream(messages, tools)]


def assert_human(message: str) -> None:
    assert "Traceback" not in message and 'File "' not in message and "\n" not in message
    assert message.endswith(".")


async def test_streams_text_deltas_then_the_reply(fake_openai: FakeOpenAI, model) -> None:
    fake_openai.script.append(Text("Hello from the fake endpoint!", pieces=4))
    *deltas, reply = await items(model, [{"role": "user", "content": "hi"}], [])
    assert len(deltas) == 4 and "".join(deltas) == "Hello from the fake endpoint!"
    assert isinstance(reply, ModelReply) and reply.text == "Hello from the fake endpoint!"
    assert reply.tool_calls == []
    (request,) = fake_openai.requests
    assert request["model"] == "fake-model" and request["stream"] is True
    assert "tools" not in request  # only sent when there are tools
    assert fake_openai.headers[0]["Authorization"] == "Bearer sk-test"


async def test_split_interleaved_tool_calls_are_assembled(fake_openai: FakeOpenAI, model) -> None:
    fake_openai.script.append(
        tool_calls(
            ("call_a", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
            ("call_b", "get_city_info", '{"city": "北京"}'),
        )
    )
    (reply,) = await items(model, [{"role": "user", "content": "x"}], [])
    assert [(c.id, c.name) for c in reply.tool_calls] == [
        ("call_a", "get_weather"),
        ("call_b", "get_city_info"),
    ]
    assert json.loads(reply.tool_calls[0].arguments) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(reply.tool_calls[1].arguments) == {"city": "北京"}


async def test_agent_turn_over_the_wire(fake_openai: FakeOpenAI, model) -> None:
    fake_openai.script += [
        tool_calls(
            ("call_a", "get_weather", '{"city": "Paris"}'),
            ("call_b", "get_city_info", '{"city": "Paris"}'),
            text="Checking. ",
        ),
        Text("Paris is sunny and big."),
    ]
    agent = create_react_agent(
        "wire", tools=[Weather(), Info()], system_prompt="You are terse.", model=model
    )
    steps = [step async for step in agent.run("Tell me about Paris")]
    calls = [s for s in steps if isinstance(s, ToolCall)]
    assert [(c.call_id, c.tool, c.args) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_city_info", {"city": "Paris"}),
    ]
    assert [s.output for s in steps if isinstance(s, ToolFinished)] == [
        "Paris: sunny",
        "Paris: big",
    ]
    assert "".join(s.text for s in steps if isinstance(s, TextDelta) and s.step == 2) == (
        "Paris is sunny and big."
    )
    assert steps[-1] == FinalAnswer("Paris is sunny and big.")

    first, second = fake_openai.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_city_info"]
    assert first["tools"][0]["function"]["parameters"] == Weather.parameters
    assert first["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about Paris"},
    ]
    assistant, tool_a, tool_b = second["messages"][2:]
    assert assistant["tool_calls"][1]["function"] == {
        "name": "get_city_info",
        "arguments": '{"city": "Paris"}',
    }
    assert tool_a == {"role": "tool", "tool_call_id": "call_a", "content": "Paris: sunny"}
    assert tool_b["tool_call_id"] == "call_b"


@pytest.mark.parametrize(
    ("status", "expected", "hint"),
    [
        (401, "The LLM endpoint rejected the API key (401).", "Check OPENAI_API_KEY."),
        (429, "The LLM endpoint is rate limiting requests (429); try again in a moment.", "quota"),
        (
            500,
            "The LLM endpoint failed with a server error (500); try again later.",
            "Check the server behind OPENAI_BASE_URL / --llm-base-url.",
        ),
        (
            404,
            "The LLM endpoint has no model 'fake-model' or no chat completions API (404).",
            "Check MYAGENT_MODEL / --model and OPENAI_BASE_URL / --llm-base-url.",
        ),
    ],
)
async def test_http_errors_become_llm_errors_and_the_next_turn_works(
    fake_openai: FakeOpenAI, model, status: int, expected: str, hint: str
) -> None:
    """The message says what kind of failure it was (any client may see it); the
    endpoint, what it said and the setting to check are the detail (the operator's)."""
    said = {401: "Bad key", 429: "Slow down.", 500: "It broke", 404: "No such model"}[status]
    fake_openai.script += [Status(status, said), "Recovered."]
    agent = create_react_agent("err", tools=[Weather()], model=model)
    with pytest.raises(LLMError) as caught:
        await agent.arun("first")
    error = caught.value
    assert error.message == expected and error.code == "llm_error"
    assert error.detail.startswith(f"(LLM endpoint {fake_openai.base_url}: {said.rstrip('.')}.) ")
    assert hint in error.detail and str(error) == f"{expected} {error.detail}"
    assert error.public == f"{expected} The server log has the details."
    assert_human(str(error))
    assert agent.messages == []
    assert await agent.arun("second") == "Recovered."
    assert [m["content"] for m in agent.messages] == ["second", "Recovered."]
    assert len(fake_openai.requests) == 2  # no hidden retries


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    model = OpenAIModel(base_url=url)
    agent = create_react_agent("down", model=model)
    try:
        with pytest.raises(LLMError) as caught:
            await agent.arun("hi")
    finally:
        await model.aclose()
    assert str(caught.value) == (
        f"Could not reach the LLM endpoint. (LLM endpoint {url}: connection refused.) "
        "Check OPENAI_BASE_URL / --llm-base-url."
    )
    assert caught.value.public == (
        "Could not reach the LLM endpoint. The server log has the details."
    )
    assert agent.messages == []


@pytest.mark.parametrize("reply", [Hang(), Hang(text_first="Partial answer")])
async def test_timeout_before_or_during_the_stream(fake_openai: FakeOpenAI, reply: Hang) -> None:
    model = OpenAIModel(base_url=fake_openai.base_url, timeout=0.3)
    fake_openai.script += [reply, "After the timeout."]
    agent = create_react_agent("slow", model=model)
    try:
        with pytest.raises(LLMError) as caught:
            await agent.arun("hi")
        assert caught.value.message == "The LLM endpoint did not answer within 0.3 s."
        assert caught.value.detail.startswith(f"(LLM endpoint {fake_openai.base_url}.) ")
        assert_human(str(caught.value))
        assert agent.messages == []
        assert await agent.arun("again") == "After the timeout."
    finally:
        await model.aclose()


async def test_malformed_stream(fake_openai: FakeOpenAI, model) -> None:
    fake_openai.script.append(Raw(["{not json"]))
    with pytest.raises(LLMError, match="malformed streaming reply") as caught:
        await items(model, [{"role": "user", "content": "hi"}], [])
    assert_human(str(caught.value))


TRUNCATED_CALL = [("call_a", "get_weather", '{"city": "Par')]


@pytest.mark.parametrize(
    "reply",
    [
        Truncated(text="The answer is"),
        Truncated(text="The answer is", done=True),
        Truncated(tool_calls=TRUNCATED_CALL),
        Truncated(text="Checking. ", tool_calls=TRUNCATED_CALL, done=True),
        Truncated(),
    ],
    ids=["text", "text-done", "tool-call", "tool-call-done", "empty"],
)
async def test_stream_ending_without_finish_reason_is_an_llm_error(
    fake_openai: FakeOpenAI, model, reply: Truncated
) -> None:
    """llama.cpp closes the stream with no finish_reason when the prompt overflows its
    context: that is a failed request, not an empty (or partial) answer."""
    fake_openai.script.append(reply)
    with pytest.raises(LLMError) as caught:
        await items(model, [{"role": "user", "content": "hi"}], [])
    assert caught.value.code == "llm_error"
    message = str(caught.value)
    assert caught.value.message.startswith("The LLM endpoint closed the stream")
    assert fake_openai.base_url in caught.value.detail
    assert "finish_reason" in message and "--ctx-size" in message
    assert_human(message)


async def test_truncated_stream_fails_the_agent_turn_and_the_next_turn_works(
    fake_openai: FakeOpenAI, model
) -> None:
    fake_openai.script += [Truncated(text="Partial"), Text("Whole answer.")]
    agent = create_react_agent("overflow", tools=[Weather()], model=model)
    with pytest.raises(LLMError, match="no finish_reason"):
        await agent.arun("first")
    assert agent.messages == []
    assert await agent.arun("second") == "Whole answer."


async def test_length_finish_with_text_is_a_truncated_answer(fake_openai: FakeOpenAI, model):
    fake_openai.script.append(Text("Cut short by the token lim", finish="length"))
    *deltas, reply = await items(model, [{"role": "user", "content": "hi"}], [])
    assert "".join(deltas) == "Cut short by the token lim"
    assert reply == ModelReply(text="Cut short by the token lim")


async def test_length_finish_in_a_tool_call_is_an_llm_error(fake_openai: FakeOpenAI, model):
    fake_openai.script.append(tool_calls(*TRUNCATED_CALL, text="Checking. ", finish="length"))
    with pytest.raises(LLMError) as caught:
        await items(model, [{"role": "user", "content": "hi"}], [])
    assert caught.value.code == "llm_error"
    message = str(caught.value)
    assert "token limit" in message and "finish_reason: length" in message
    assert_human(message)


async def test_placeholder_key_for_a_local_endpoint(fake_openai: FakeOpenAI) -> None:
    model = OpenAIModel(model="llama3", base_url=fake_openai.base_url)
    fake_openai.script.append("ok")
    try:
        assert (await items(model, [{"role": "user", "content": "hi"}], []))[-1].text == "ok"
    finally:
        await model.aclose()
    assert fake_openai.headers[0]["Authorization"] == "Bearer not-needed"
    assert model.describe() == {
        "provider": "openai",
        "model": "llama3",
        "offline": False,
        "base_url": fake_openai.base_url,
    }


async def test_no_key_and_no_endpoint_is_a_clear_error() -> None:
    model = OpenAIModel()
    with pytest.raises(LLMError, match="Set OPENAI_API_KEY"):
        await items(model, [{"role": "user", "content": "hi"}], [])
    await model.aclose()


async def test_the_http_client_is_built_at_start_up_not_on_the_first_turn(serve, fake_openai):
    """Building the SDK client stalled the event loop ~70 ms on the first turn of a fresh
    process, for every connection; the server builds it before it is ready instead."""
    model = OpenAIModel(model="fake", base_url=fake_openai.base_url, api_key="k")
    assert model._client is None
    await serve(model=model)
    assert model._client is not None
    await model.aclose()


async def test_an_error_object_in_the_stream_is_an_llm_error(fake_openai):
    """Some servers report a failure mid-stream as `data: {"error": {...}}`."""
    fake_openai.script.append(Raw(['{"error": {"message": "The model overloaded."}}']))
    model = OpenAIModel(model="fake", base_url=fake_openai.base_url, api_key="k")
    try:
        with pytest.raises(LLMError, match="The model overloaded"):
            await create_react_agent("e", model=model).arun("hi")
    finally:
        await model.aclose()


async def test_a_slow_consumer_is_not_an_llm_timeout(fake_openai: FakeOpenAI) -> None:
    """The LLM timeout counts only time spent waiting for the endpoint: a consumer that
    takes longer than it between chunks (a turn pacing a slow client) is not a timeout."""
    fake_openai.script.append(Text("one two three", pieces=3))
    model = OpenAIModel(base_url=fake_openai.base_url, api_key="k", timeout=0.2)
    pieces = []
    try:
        async with contextlib.aclosing(model.stream([{"role": "user", "content": "hi"}], [])) as s:
            async for item in s:
                pieces.append(item)
                await asyncio.sleep(0.35)
    finally:
        await model.aclose()
    assert "".join(p for p in pieces if isinstance(p, str)) == "one two three"
    assert isinstance(pieces[-1], ModelReply)
