"""The weather plugin as installed: its tools (the host's myagent.demo.weather, re-exported),
real turns on the offline model, its entry point and hook, the agent file that uses the same
tools, and a session through the server.

Self-contained (no fixtures from the host's tests/): run with
``.venv/bin/pytest plugins/weather`` from the repository root.
"""

from __future__ import annotations

import asyncio
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
import myagent_ws_weather
import myagent_ws_weather.tools as plugin_tools
import pytest
from myagent_ws_weather import create_agent, register_agents
from myagent_ws_weather.tools import CITIES, GetCityInfoTool, GetWeatherTool, find_city

from myagent import ReactAgent
from myagent.demo import weather as demo_weather
from myagent.events import FinalAnswer, TextDelta, Thinking, ToolCall, ToolFinished
from myagent.offline import OfflineModel
from myagent_ws.app import create_app
from myagent_ws.plugins import AgentSources, build_registry, make_plugin_manager
from myagent_ws.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ws_weather_agent.py"


@pytest.fixture(autouse=True)
def _no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's model comes from the environment: make sure it is the offline one."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MYAGENT_MODEL"):
        monkeypatch.delenv(name, raising=False)


def offline_agent() -> ReactAgent:
    agent = create_agent()
    agent.model = OfflineModel()
    return agent


# --- the tools ---------------------------------------------------------------------------


async def test_weather_answers_in_the_language_the_city_was_asked_in() -> None:
    tool = GetWeatherTool()
    assert (await tool.execute(city="北京")).output == "北京：晴，气温 25°C，湿度 40%，北风 2 级。"
    english = (await tool.execute(city="beijing")).output
    assert english == "Beijing: sunny, 25°C, humidity 40%, north wind 8 km/h."
    assert (await tool.execute(city=" Peking ")).output == english  # alias, spaces, any case
    assert (await tool.execute(city="北京市")).output.startswith("北京：")  # 市 suffix
    assert (await tool.execute(city="New York City")).output.startswith("New York: sunny")


async def test_city_info_in_both_languages() -> None:
    tool = GetCityInfoTool()
    assert "2487" in (await tool.execute(city="上海")).output
    info = (await tool.execute(city="Tokyo")).output
    assert info.startswith("Tokyo (东京): population about 14 million, in Tokyo Metropolis")


@pytest.mark.parametrize("tool", [GetWeatherTool(), GetCityInfoTool()], ids=lambda t: t.name)
async def test_unknown_city_is_an_error_listing_the_known_ones(tool: Any) -> None:
    chinese = await tool.execute(city="火星")
    assert chinese.error.startswith("没有城市“火星”的数据") and "北京、上海" in chinese.error
    english = await tool.execute(city="Atlantis")
    assert english.error.startswith("No data for the city 'Atlantis'")
    assert all(city.en in english.error for city in CITIES)


def test_arguments_are_checked_against_the_schema() -> None:
    tool = GetWeatherTool()
    assert tool.validate_arguments({"city": "Paris"}) is None
    assert "city" in tool.validate_arguments({})
    assert tool.validate_arguments({"city": 3}) is not None


def test_city_data_is_consistent() -> None:
    assert len({c.zh for c in CITIES}) == len({c.en for c in CITIES}) == len(CITIES) == 8
    assert all(find_city(c.zh) is find_city(c.en.upper()) is c for c in CITIES)
    assert find_city("Atlantis") is None


# --- real turns on the offline model ------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "tool", "city", "answer"),
    [
        ("北京今天天气怎么样？", "get_weather", "北京", "25°C"),
        ("What's the weather in Paris?", "get_weather", "Paris", "19°C"),
        ("What's the weather in Tokyo?", "get_weather", "Tokyo", "24°C"),
        ("How is the weather in London today?", "get_weather", "London", "light rain"),
        ("Tell me about 上海", "get_city_info", "上海", "2487"),
        ("深圳天气", "get_weather", "深圳", "阵雨"),
    ],
)
async def test_offline_turn_calls_the_right_tool(
    question: str, tool: str, city: str, answer: str
) -> None:
    agent = offline_agent()
    assert answer in await agent.arun(question)
    call = agent.messages[1]["tool_calls"][0]["function"]
    assert (call["name"], call["arguments"]) == (tool, f'{{"city": "{city}"}}')
    assert [m["role"] for m in agent.messages] == ["user", "assistant", "tool", "assistant"]


async def test_run_streams_each_step() -> None:
    steps = [step async for step in offline_agent().run("What's the weather in Paris?")]
    assert isinstance(steps[0], Thinking)
    (call,) = [s for s in steps if isinstance(s, ToolCall)]
    (done,) = [s for s in steps if isinstance(s, ToolFinished)]
    assert (call.tool, call.args, done.call_id, done.status) == (
        "get_weather",
        {"city": "Paris"},
        call.call_id,
        "success",
    )
    final = steps[-1]
    assert isinstance(final, FinalAnswer) and "Paris: partly cloudy, 19°C" in final.text
    assert "".join(s.text for s in steps if isinstance(s, TextDelta)) == final.text


async def test_unknown_city_turn_answers_with_the_known_cities() -> None:
    steps = [step async for step in offline_agent().run("火星天气怎么样？")]
    assert [s.status for s in steps if isinstance(s, ToolFinished)] == ["error"]
    assert "北京" in steps[-1].text


# --- packaging: entry point, hook, the agent file ------------------------------------------


def test_entry_point_is_installed_and_loads_the_module() -> None:
    (ep,) = entry_points(group="myagent_ws", name="weather")
    assert ep.value == "myagent_ws_weather"
    assert ep.dist is not None and ep.dist.name == "myagent-ws-weather"
    assert ep.load() is myagent_ws_weather


def test_register_agents_contributes_one_fresh_agent_per_call() -> None:
    registered: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    register_agents(lambda *args, **kwargs: registered.append((args, kwargs)))
    ((name, factory), kwargs) = registered[0]
    assert len(registered) == 1 and name == "weather-assistant" and kwargs["description"]
    first, second = factory(), factory()
    assert first is not second and first.tools[0] is not second.tools[0]
    assert [t.name for t in first.tools] == ["get_weather", "get_city_info"]


def test_plugin_manager_loads_it_by_name() -> None:
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("weather",)))
    assert registry.names() == ["weather-assistant"]
    assert pm.get_plugin("weather") is myagent_ws_weather
    spec = registry.resolve("weather-assistant")
    assert spec.tools == ("get_weather", "get_city_info") and spec.source == "plugin weather"


def test_tools_are_the_hosts_demo_tools_re_exported() -> None:
    assert plugin_tools.__all__ == demo_weather.__all__
    assert all(getattr(plugin_tools, n) is getattr(demo_weather, n) for n in plugin_tools.__all__)


def test_example_agent_file_uses_the_same_tools_as_the_plugin() -> None:
    module_spec = importlib.util.spec_from_file_location("weather_example_file", EXAMPLE)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    example, plugin = module.agent, create_agent()
    assert [type(t) for t in example.tools] == [GetWeatherTool, GetCityInfoTool]
    for attr in ("name", "description", "system_prompt", "max_steps"):
        assert getattr(example, attr) == getattr(plugin, attr), attr


# --- end to end through the server ---------------------------------------------------------


async def test_session_through_the_server(aiohttp_server: Any) -> None:
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("weather",)))
    app = create_app(Settings(host="127.0.0.1", port=0), registry, pm=pm)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/")) as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "system.connected"
        await ws.send_json(
            {"event": "user.create_session", "content": {"agent": "weather-assistant"}}
        )
        created = await receive_until(ws, "agent.session_created")
        assert created["metadata"]["llm"]["provider"] == "offline"
        sid = created["session_id"]
        await ws.send_json({"event": "user.message", "session_id": sid, "content": "深圳天气"})
        events = await receive_until(ws, "agent.final_answer", collect=True)
    names = [e["event"] for e in events]
    call, result = events[names.index("agent.tool_call")], events[names.index("agent.tool_result")]
    assert (call["metadata"]["tool"], call["metadata"]["args"]) == ("get_weather", {"city": "深圳"})
    assert result["metadata"]["call_id"] == call["metadata"]["call_id"]
    assert result["metadata"]["status"] == "success" and "30°C" in result["content"]
    assert "阵雨" in events[-1]["content"]
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[-1]["seq"] + 1))


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, name: str, collect: bool = False
) -> Any:
    """Session events up to the one named `name`: that event, or all of them (`collect`)."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:
            event = await ws.receive_json()
            if event["event"].startswith("agent."):
                events.append(event)
            assert event["event"] not in ("agent.error", "system.error"), event
            if event["event"] == name:
                return events if collect else event
