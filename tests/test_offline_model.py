"""OfflineModel (tool choice, arguments, streaming, answers; the weather example end to
end), FunctionModel, and model_from_env."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from myagent import (
    BaseTool,
    FinalAnswer,
    FunctionModel,
    ModelReply,
    OfflineModel,
    OpenAIModel,
    ReactAgent,
    TextDelta,
    Thinking,
    ToolCall,
    ToolFinished,
    create_react_agent,
    model_from_env,
)
from myagent.offline import chunks, derive_arguments, pick_tool

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city. 查询城市天气：气温、天气状况。",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "examples": ["北京", "Paris"]}},
            "required": ["city"],
        },
    },
}
INFO = {
    "type": "function",
    "function": {
        "name": "get_city_info",
        "description": "Get basic information about a city. 查询城市基本信息：人口、简介。",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def stream(model: OfflineModel, messages: list[dict[str, Any]], tools: list[Any]) -> list:
    return [item async for item in model.stream(messages, tools)]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("text", "tool"),
    [
        ("北京今天天气怎么样？", "get_weather"),
        ("告诉我上海的基本信息", "get_city_info"),
        ("What's the weather in Paris?", "get_weather"),
        ("Some information about Tokyo please", "get_city_info"),
        ("city", "get_weather"),  # a tie goes to the first tool
        ("你好", None),
        ("Hello there", None),
    ],
)
def test_pick_tool_by_keyword_overlap(text: str, tool: str | None) -> None:
    picked = pick_tool(text, [WEATHER, INFO])
    assert (picked["name"] if picked else None) == tool


@pytest.mark.parametrize(
    ("text", "city"),
    [
        ("北京今天天气怎么样？", "北京"),  # from examples
        ("告诉我上海的基本信息", "上海"),  # filler stripped, cut at 的
        ("请问广州现在的天气如何", "广州"),
        ("帮我查一下深圳天气", "深圳"),
        ("今天杭州天气怎么样", "杭州"),
        ("weather in New York today", "New York"),
        ("Tell me about Rome.", "Rome"),
        ("paris", "Paris"),  # examples match in any case
        ("how is it", "how is it"),
    ],
)
def test_string_arguments_from_the_text(text: str, city: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "examples": ["北京", "Paris"]}},
        "required": ["city"],
    }
    assert derive_arguments(schema, text) == {"city": city}


def test_typed_arguments_required_and_optional() -> None:
    schema = {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "ratio": {"type": "number"},
            "detail": {"type": "boolean"},
            "limit": {"type": "integer", "default": 5},
            "lang": {"type": "string", "default": "zh"},
            "note": {"type": "string"},
        },
        "required": ["unit", "days", "ratio", "detail"],
    }
    assert derive_arguments(schema, "forecast for 3 days in Fahrenheit, ratio 0.5") == {
        "unit": "fahrenheit",
        "days": 3,
        "ratio": 3,
        "detail": False,
        "limit": 5,
        "lang": "zh",
    }
    assert derive_arguments(schema, "no numbers here")["days"] == 1
    assert derive_arguments(schema, "no numbers here")["unit"] == "celsius"
    with_default = {"type": "object", "properties": {"n": {"type": "integer", "default": 7}}}
    assert derive_arguments({**with_default, "required": ["n"]}, "none") == {"n": 7}


async def test_user_message_becomes_a_tool_call_with_a_unique_id() -> None:
    model = OfflineModel()
    items = await stream(model, user("北京今天天气怎么样？"), [WEATHER, INFO])
    (reply,) = items
    assert isinstance(reply, ModelReply) and reply.text == ""
    (call,) = reply.tool_calls
    assert call.name == "get_weather" and call.arguments == '{"city": "北京"}'
    assert call.id.startswith("call_") and len(call.id) > 8
    again = (await stream(model, user("北京今天天气怎么样？"), [WEATHER]))[-1]
    assert again.tool_calls[0].id != call.id


def tool_turn(question: str, *outputs: str) -> list[dict[str, Any]]:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        for i in range(len(outputs))
    ]
    return [
        *user(question),
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": f"c{i}", "content": o} for i, o in enumerate(outputs)),
    ]


async def test_answers_from_tool_results_in_the_users_language_streamed_in_chunks() -> None:
    model = OfflineModel()
    items = await stream(model, tool_turn("北京今天天气怎么样？", "北京：晴，25°C"), [WEATHER])
    *deltas, reply = items
    assert isinstance(reply, ModelReply) and reply.tool_calls == []
    assert len(deltas) >= 3 and all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == reply.text
    assert reply.text.startswith("查询结果") and "北京：晴，25°C" in reply.text
    english = (
        await stream(model, tool_turn("Weather in Paris?", "Paris: sunny", "Rome: rain"), [])
    )[-1]
    assert english.text.startswith("Here is what I found")
    assert "Paris: sunny" in english.text and "Rome: rain" in english.text


async def test_answers_without_tools_when_none_fits() -> None:
    model = OfflineModel()
    reply = (await stream(model, user("Hello there"), [WEATHER]))[-1]
    assert reply.tool_calls == [] and "Hello there" in reply.text and "get_weather" in reply.text
    assert "OPENAI_API_KEY" in reply.text
    chinese = (await stream(model, user("你好"), []))[-1]
    assert "你好" in chinese.text and "离线" in chinese.text


@pytest.mark.parametrize(
    "text",
    ["Here is what I found: Paris: sunny, 25°C.", "查询结果：北京：晴，气温 25°C。", "x" * 13],
)
def test_chunks_join_back_and_are_at_least_three(text: str) -> None:
    pieces = chunks(text)
    assert "".join(pieces) == text and len(pieces) >= 3 and all(pieces)


def test_describe() -> None:
    assert OfflineModel().describe() == {"provider": "offline", "model": "offline", "offline": True}


def test_model_from_env_is_offline_without_a_key_or_endpoint() -> None:
    assert isinstance(model_from_env(), OfflineModel)
    assert isinstance(model_from_env(model="gpt-4o"), OfflineModel)


def test_model_from_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("MYAGENT_MODEL", "env-model")
    model = model_from_env()
    assert isinstance(model, OpenAIModel)
    assert (model.model_id, model.api_key, model.base_url) == ("env-model", "sk-env", None)
    assert model.describe() == {
        "provider": "openai",
        "model": "env-model",
        "offline": False,
        "base_url": None,
    }
    explicit = model_from_env(model="m2", base_url="http://127.0.0.1:9/v1", api_key="sk-arg")
    assert (explicit.model_id, explicit.api_key, explicit.base_url) == (
        "m2",
        "sk-arg",
        "http://127.0.0.1:9/v1",
    )


def test_a_base_url_alone_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    model = model_from_env()
    assert isinstance(model, OpenAIModel)
    assert model.base_url == "http://127.0.0.1:11434/v1" and model.api_key  # a placeholder
    assert model.model_id == "gpt-4o-mini"


# --- the weather example end to end on the offline model --------------------------------


@pytest.fixture
def weather() -> ReactAgent:
    spec = importlib.util.spec_from_file_location(
        "weather_example", EXAMPLES / "ws_weather_agent.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.agent.clone()


async def collect(agent: ReactAgent, text: str) -> list[Any]:
    return [step async for step in agent.run(text)]


def of(kind: type, steps: list[Any]) -> list[Any]:
    return [s for s in steps if isinstance(s, kind)]


async def test_weather_in_chinese_calls_get_weather_and_answers_with_its_data(weather) -> None:
    steps = await collect(weather, "北京今天天气怎么样？")
    assert isinstance(steps[0], Thinking) and steps[0].step == 1
    assert isinstance(steps[-1], FinalAnswer)
    (tool_call,) = of(ToolCall, steps)
    assert (tool_call.tool, tool_call.args) == ("get_weather", {"city": "北京"})
    assert tool_call.call_id.startswith("call_")
    (finished,) = of(ToolFinished, steps)
    assert finished.status == "success" and finished.call_id == tool_call.call_id
    assert "25°C" in finished.output and finished.duration_ms >= 0
    assert steps.index(tool_call) < steps.index(finished)
    deltas = of(TextDelta, steps)
    assert len(deltas) >= 3 and all(d.step == 2 for d in deltas)
    answer = steps[-1].text
    assert "".join(d.text for d in deltas) == answer
    assert "北京" in answer and "25°C" in answer and "晴" in answer
    assert [s.step for s in of(Thinking, steps)] == [1, 2]


async def test_weather_in_english(weather) -> None:
    steps = await collect(weather, "What's the weather in Paris?")
    (tool_call,) = of(ToolCall, steps)
    assert (tool_call.tool, tool_call.args) == ("get_weather", {"city": "Paris"})
    assert "Paris" in steps[-1].text and "19°C" in steps[-1].text


async def test_city_info_and_english_names_and_unknown_city(weather) -> None:
    steps = await collect(weather, "告诉我上海的基本信息")
    assert of(ToolCall, steps)[0].args == {"city": "上海"}
    assert of(ToolCall, steps)[0].tool == "get_city_info"
    assert "2487" in steps[-1].text
    tool = weather.tools[0]
    assert (await tool.execute(city="Beijing")).output.startswith("Beijing:")
    assert "25°C" in (await tool.execute(city="beijing")).output
    unknown = await tool.execute(city="Atlantis")
    assert unknown.error and "London" in unknown.error and "Paris" in unknown.error
    steps = await collect(weather.clone(), "火星天气怎么样？")
    assert of(ToolFinished, steps)[0].status == "error"
    assert "北京" in steps[-1].text  # the answer names the cities it knows


# --- FunctionModel ----------------------------------------------------------------------


class Noop(BaseTool):
    name = "noop"
    description = "Does nothing."

    async def execute(self) -> str:
        return ""


async def test_function_model_sync_and_async() -> None:
    def sync_fn(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        messages.append({"role": "user", "content": "scribble"})  # must not touch memory
        return f"sync saw {len(tools)} tools"

    async def async_fn(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelReply:
        await asyncio.sleep(0)
        return ModelReply(text="async answer")

    agent = create_react_agent("fs", tools=[Noop()], model=FunctionModel(sync_fn))
    assert await agent.arun("hi") == "sync saw 1 tools"
    assert len(agent.messages) == 2
    assert agent.model.describe() == {"provider": "function", "model": "sync_fn", "offline": True}
    steps = await collect(create_react_agent("fa", model=FunctionModel(async_fn)), "hi")
    assert [type(s) for s in steps] == [Thinking, TextDelta, FinalAnswer]
    assert steps[-1].text == "async answer"
    with pytest.raises(TypeError, match="return a str"):
        await create_react_agent("bad", model=FunctionModel(lambda m, t: 42)).arun("hi")
