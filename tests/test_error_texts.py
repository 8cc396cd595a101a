"""Nothing internal leaves the server in error texts: a real server, real WebSocket
clients, a local OpenAI-compatible endpoint and a closed port. Without --debug, wire
errors name no host, URL, path, upstream body or tool exception text, and say where to
look; the server log has the detail. With --debug, the detail is on the wire too."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from myagent import BaseTool, FunctionModel, ModelReply, ToolCallRequest, create_react_agent
from myagent.llm import OpenAIModel
from tests.conftest import free_port
from tests.fake_openai import FakeOpenAI, Status

# What an upstream error body or a tool's exception may hold: none of it goes to clients.
UPSTREAM_BODY = "db.internal:5432 said: disk full at /srv/llm/weights.bin, key sk-live-S3CR3T"
TOOL_FAILURE = "/etc/secret-path on db.internal:5432"
LOG_POINTER = "The server log has the details."


def assert_clean(text: str, *internal: str) -> None:
    """No host, no path, none of the given internal strings."""
    for word in ("127.0.0.1", "localhost", "db.internal", "secret", "S3CR3T", *internal):
        assert word not in text, f"{word!r} leaked: {text!r}"
    assert "/" not in text, f"a path or URL leaked: {text!r}"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the server logged, tracebacks included."""
    return "\n".join(
        record.getMessage() + (f"\n{record.exc_text}" if record.exc_text else "")
        for record in caplog.records
    )


async def one_turn(serve: Any, connect: Any, text: str, **options: Any) -> list[Any]:
    """The events of one turn (`text`) in a new session on a new server, serve(**options)."""
    client = await connect(await serve(**options))
    sid = await client.create_session()
    return await client.turn(sid, text)


async def failed_turn(serve: Any, connect: Any, model: Any, debug: bool = False) -> str:
    """The content of the agent.error that ends one turn on `model`."""
    error = (await one_turn(serve, connect, "hello", model=model, debug=debug))[-1]
    assert error["event"] == "agent.error" and error["metadata"]["code"] == "llm_error"
    return error["content"]


@pytest.fixture
async def endpoint_model(fake_openai: FakeOpenAI) -> Any:
    model = OpenAIModel(model="fake-1", api_key="sk-test", base_url=fake_openai.base_url)
    yield model
    await model.aclose()


async def test_unreachable_endpoint(serve, connect, caplog) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()  # closed: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    model = OpenAIModel(model="fake-1", base_url=url)
    try:
        content = await failed_turn(serve, connect, model)
    finally:
        await model.aclose()
    assert content == f"Could not reach the LLM endpoint. {LOG_POINTER}"
    assert_clean(content, str(port), "refused", "OPENAI_BASE_URL")
    # The operator gets the endpoint, the reason and the setting, once per failed turn.
    text = logged(caplog)
    assert f"{url}: connection refused" in text and "Check OPENAI_BASE_URL" in text
    assert sum(url in record.getMessage() for record in caplog.records) == 1


async def test_upstream_500_body_stays_in_the_log(
    serve, connect, caplog, fake_openai: FakeOpenAI, endpoint_model
) -> None:
    caplog.set_level(logging.WARNING)
    fake_openai.script.append(Status(500, UPSTREAM_BODY))
    content = await failed_turn(serve, connect, endpoint_model)
    assert content == (
        f"The LLM endpoint failed with a server error (500); try again later. {LOG_POINTER}"
    )
    host_port = urlsplit(fake_openai.base_url).netloc
    assert_clean(content, host_port, "disk full", "weights")
    text = logged(caplog)
    assert UPSTREAM_BODY in text and fake_openai.base_url in text


async def test_upstream_401_says_the_key_was_rejected_and_nothing_else(
    serve, connect, caplog, fake_openai: FakeOpenAI, endpoint_model
) -> None:
    caplog.set_level(logging.WARNING)
    body = "Incorrect API key provided: sk-test. You can find your key at /account/api-keys"
    fake_openai.script.append(Status(401, body))
    content = await failed_turn(serve, connect, endpoint_model)
    assert content == f"The LLM endpoint rejected the API key (401). {LOG_POINTER}"
    host_port = urlsplit(fake_openai.base_url).netloc
    assert_clean(content, host_port, "sk-test", "Incorrect", "OPENAI_API_KEY")
    assert body.rstrip(".") in logged(caplog)


async def test_with_debug_the_detail_is_on_the_wire(
    serve, connect, fake_openai: FakeOpenAI, endpoint_model
) -> None:
    fake_openai.script.append(Status(500, UPSTREAM_BODY))
    content = await failed_turn(serve, connect, endpoint_model, debug=True)
    assert content.startswith("The LLM endpoint failed with a server error (500)")
    assert fake_openai.base_url in content and UPSTREAM_BODY in content
    assert "OPENAI_BASE_URL / --llm-base-url" in content and LOG_POINTER not in content


class Leaky(BaseTool):
    name = "lookup"
    description = "Look up a record in the records database."

    async def execute(self) -> Any:
        raise RuntimeError(TOOL_FAILURE)


def leaky_agent(seen: list[str]) -> Any:
    """Calls the tool once, then answers without repeating what the tool said; `seen`
    gets what the model read as the tool's result."""

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        if messages[-1]["role"] == "user":
            return ModelReply(tool_calls=[ToolCallRequest("call_1", "lookup", "{}")])
        seen.append(messages[-1]["content"])
        return "The lookup did not work."

    return create_react_agent("leaky", tools=[Leaky()], model=FunctionModel(model))


async def tool_turn(serve: Any, connect: Any, agent: Any, debug: bool = False) -> list[Any]:
    return await one_turn(
        serve, connect, "look up the record", files=(), agents=(agent,), debug=debug
    )


async def test_a_tool_exception_stays_in_the_log(serve, connect, caplog) -> None:
    caplog.set_level(logging.WARNING)
    seen: list[str] = []
    events = await tool_turn(serve, connect, leaky_agent(seen))
    (result,) = [e for e in events if e["event"] == "agent.tool_result"]
    assert result["metadata"]["status"] == "error" and result["metadata"]["tool"] == "lookup"
    assert result["content"] == "The tool lookup failed (RuntimeError); see the server log."
    for event in events:
        assert_clean(str(event.get("content")))
    assert events[-1]["event"] == "agent.final_answer"
    # The model read the whole text (it helps it recover); the log has it with a traceback.
    assert seen == [f"The tool lookup failed: RuntimeError: {TOOL_FAILURE}"]
    (record,) = [r for r in caplog.records if r.name == "myagent.tools"]
    assert record.levelno == logging.WARNING and TOOL_FAILURE in record.getMessage()
    assert "Traceback" in logged(caplog) and "raise RuntimeError" in logged(caplog)


async def test_with_debug_a_tool_exception_is_on_the_wire(serve, connect) -> None:
    events = await tool_turn(serve, connect, leaky_agent([]), debug=True)
    (result,) = [e for e in events if e["event"] == "agent.tool_result"]
    assert result["content"] == f"The tool lookup failed: RuntimeError: {TOOL_FAILURE}"


async def test_the_offline_model_does_not_repeat_a_tool_exception(serve, connect) -> None:
    """The built-in offline model answers from tool results: a failed tool's exception
    text is not among what it repeats to the user."""
    agent = create_react_agent("leaky", tools=[Leaky()])  # the server's model: offline
    events = await tool_turn(serve, connect, agent)
    assert [e["metadata"]["status"] for e in events if e["event"] == "agent.tool_result"] == [
        "error"
    ]
    answer = events[-1]
    assert answer["event"] == "agent.final_answer"
    assert "The tool lookup failed (RuntimeError)" in answer["content"]
    for event in events:
        assert_clean(str(event.get("content")))


@pytest.mark.parametrize("debug", [False, True])
async def test_session_created_names_the_endpoint_only_with_debug(
    serve, connect, endpoint_model, fake_openai: FakeOpenAI, debug: bool
) -> None:
    client = await connect(await serve(model=endpoint_model, debug=debug))
    await client.send({"event": "user.create_session"})
    llm = (await client.expect("agent.session_created"))["metadata"]["llm"]
    assert llm["model"] == "fake-1" and llm["provider"] == "openai"
    assert ("base_url" in llm) is debug
    assert (fake_openai.base_url in str(llm)) is debug
