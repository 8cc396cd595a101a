"""The calculator package as installed: safe arithmetic (every refusal), unit conversion,
real turns on the offline model, its entry point, and a session through the server.

Self-contained (no fixtures from the host's tests/): run with
``.venv/bin/pytest plugins/calculator`` from the repository root.
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import entry_points
from typing import Any

import aiohttp
import myagent_ws_calculator
import pytest
from myagent_ws_calculator import create_agent
from myagent_ws_calculator.tools import CalculateTool, ConvertUnitsTool

from myagent import ReactAgent
from myagent.events import FinalAnswer, ToolCall, ToolFinished
from myagent.offline import OfflineModel
from myagent_ws.app import create_app
from myagent_ws.plugins import AgentSources, build_registry, make_plugin_manager
from myagent_ws.settings import Settings


@pytest.fixture(autouse=True)
def _no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's model comes from the environment: make sure it is the offline one."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MYAGENT_MODEL"):
        monkeypatch.delenv(name, raising=False)


def offline_agent() -> ReactAgent:
    agent = create_agent()
    agent.model = OfflineModel()
    return agent


async def calc(expression: str) -> Any:
    return await CalculateTool().execute(expression=expression)


# --- calculate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "output"),
    [
        ("12 * (3 + 4)", "12 * (3 + 4) = 84"),
        ("2**10", "2**10 = 1024"),
        ("7 // 2 + 7 % 2", "7 // 2 + 7 % 2 = 4"),
        ("-(-2) ** 2", "-(-2) ** 2 = -4"),
        ("10 / 4", "10 / 4 = 2.5"),
        ("10 / 2", "10 / 2 = 5"),
        ("0.1 + 0.2", "0.1 + 0.2 = 0.3"),
        ("2 ** -2", "2 ** -2 = 0.25"),
        ("2 ** 0.5", "2 ** 0.5 = 1.41421356237"),
        ("1e3 + 1", "1e3 + 1 = 1001"),
        ("-42", "-42 = -42"),
        # the words around an expression, as models (the offline one) pass them
        ("What is 12 * (3 + 4)?", "12 * (3 + 4) = 84"),
        ("What is 12 * (3 + 4", "12 * (3 + 4) = 84"),  # closing parenthesis trimmed away
        ("calculate 2**10", "2**10 = 1024"),
        ("计算 (2+3)*4", "(2+3)*4 = 20"),
        ("(2+3)*4 等于多少？", "(2+3)*4 = 20"),
        ("In 2024, what is 3*4?", "3*4 = 12"),
        # how people write operators
        ("How much is 12 times 7?", "12 * 7 = 84"),
        ("3 x 4", "3 * 4 = 12"),
        ("3加4", "3 + 4 = 7"),
        ("10 divided by 4", "10 / 4 = 2.5"),
        ("6 × 7 ÷ 2", "6 * 7 / 2 = 21"),
        ("2^10", "2**10 = 1024"),
        ("２＋３＊４", "2+3*4 = 14"),
        ("1,000,000 / 4", "1000000 / 4 = 250000"),
    ],
)
async def test_calculate(expression: str, output: str) -> None:
    result = await calc(expression)
    assert (result.error, result.output) == (None, output)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("9**9**9", "too large"),
        ("2 ** 10000", "too large"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "too large"),
        ("1/0", "Division by zero"),
        ("5 // 0", "Division by zero"),
        ("5 % 0", "Division by zero"),
        ("0 ** -1", "Division by zero"),
        ("(-8) ** (1/3)", "not a real number"),
        ("sqrt(2)", "Functions, names and attributes (sqrt) are not supported"),
        ("pi * 2", "(pi) are not supported"),
        ("__import__('os').system('ls')", "(__import__) are not supported"),
        ("os.system('ls')", "(os.system) are not supported"),
        ("().__class__", "(.__class__) are not supported"),
        ("x + 1", "Names such as 'x' are not supported"),
        ("2 * x", "Names such as 'x' are not supported"),
        ("2(3)", "A function call"),
        ("12 * (3 + 4))", "not a valid arithmetic expression"),
        ("2 +", "not a valid arithmetic expression"),
        ("hello", "No arithmetic expression found in 'hello'"),
        ("", "No arithmetic expression found"),
        ("3 and 4", "no operator between them"),
        ("3 + 4 and 5 * 6", "more than one expression ('3 + 4', '5 * 6')"),
        ("1" + " + 1" * 300, "too long"),
    ],
)
async def test_calculate_refuses_with_a_sentence(expression: str, error: str) -> None:
    result = await calc(expression)
    assert result.error is not None and error in result.error, result
    assert result.error.endswith(".")


# --- convert_units ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "output"),
    [
        (5, "km", "mi", "5 km = 3.106855961 mi"),
        (1, "in", "cm", "1 in = 2.54 cm"),
        (3, "ft", "mm", "3 ft = 914.4 mm"),
        (2.5, "m", "m", "2.5 m = 2.5 m"),
        (1, "lb", "g", "1 lb = 453.59237 g"),
        (16, "oz", "lb", "16 oz = 1 lb"),
        (100, "C", "F", "100 C = 212 F"),
        (-40, "F", "C", "-40 F = -40 C"),
        (0, "K", "C", "0 K = -273.15 C"),
    ],
)
async def test_convert_units(value: float, from_unit: str, to_unit: str, output: str) -> None:
    result = await ConvertUnitsTool().execute(value=value, from_unit=from_unit, to_unit=to_unit)
    assert (result.error, result.output) == (None, output)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((5, "km", "kg"), "Cannot convert km (length) to kg (mass)"),
        ((5, "C", "m"), "Cannot convert C (temperature) to m (length)"),
        ((-300, "C", "K"), "below absolute zero"),
        ((5, "parsec", "m"), "Unknown unit 'parsec'"),
        ((1e308, "mi", "mm"), "too large to convert"),
    ],
)
async def test_convert_units_refuses_with_a_sentence(args: tuple[Any, ...], error: str) -> None:
    result = await ConvertUnitsTool().execute(*args)
    assert result.error is not None and error in result.error


def test_the_schema_names_the_units_and_rejects_others() -> None:
    tool = ConvertUnitsTool()
    units = tool.parameters["properties"]["from_unit"]["enum"]
    assert units == ["m", "km", "cm", "mm", "mi", "ft", "in", "kg", "g", "lb", "oz", "C", "F", "K"]
    assert tool.validate_arguments({"value": 1, "from_unit": "km", "to_unit": "mi"}) is None
    assert "to_unit" in tool.validate_arguments({"value": 1, "from_unit": "km", "to_unit": "AU"})
    assert "value" in tool.validate_arguments({"value": "1", "from_unit": "km", "to_unit": "m"})
    assert CalculateTool().validate_arguments({"expression": "1", "extra": 1}) is not None


# --- real turns on the offline model ------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "output"),
    [
        ("calculate 2**10", "2**10 = 1024"),
        ("Please compute 12 * (3 + 4)?", "12 * (3 + 4) = 84"),
        ("How much is 12 times 7?", "12 * 7 = 84"),
    ],
)
async def test_offline_turn_calls_calculate(question: str, output: str) -> None:
    steps = [step async for step in offline_agent().run(question)]
    (call,) = [s for s in steps if isinstance(s, ToolCall)]
    (done,) = [s for s in steps if isinstance(s, ToolFinished)]
    # The offline model passes (most of) the question; calculate finds the expression in it.
    assert call.tool == "calculate" and set(call.args) == {"expression"}
    assert (done.call_id, done.status, done.output) == (call.call_id, "success", output)
    assert isinstance(steps[-1], FinalAnswer) and output in steps[-1].text


async def test_offline_turn_reports_a_refusal() -> None:
    agent = offline_agent()
    answer = await agent.arun("calculate 9**9**9")
    assert "too large" in answer and agent.messages[2]["role"] == "tool"


@pytest.mark.parametrize(
    ("question", "result"), [("What is 12 * (3 + 4)?", "84"), ("计算 (2+3)*4", "20")]
)
async def test_offline_turn_without_a_calculator_word(question: str, result: str) -> None:
    agent = offline_agent()
    answer = await agent.arun(question)
    assert agent.messages[1]["tool_calls"][0]["function"]["name"] == "calculate"
    assert result in answer


async def test_offline_turn_converts_between_two_mentioned_units() -> None:
    agent = offline_agent()
    answer = await agent.arun("convert 5 km to mi")
    call = agent.messages[1]["tool_calls"][0]["function"]
    assert call["name"] == "convert_units"
    assert json.loads(call["arguments"]) == {"value": 5, "from_unit": "km", "to_unit": "mi"}
    assert "3.1" in answer


# --- packaging and the server -------------------------------------------------------------


def test_entry_point_is_installed_and_loads_the_factory() -> None:
    (ep,) = entry_points(group="myagent_ws.agents", name="calculator")
    assert ep.value == "myagent_ws_calculator:create_agent"
    assert ep.dist is not None and ep.dist.name == "myagent-ws-calculator"
    factory = ep.load()
    assert factory is myagent_ws_calculator.create_agent
    first, second = factory(), factory()
    assert first is not second and first.name == "calculator"
    assert [t.name for t in first.tools] == ["calculate", "convert_units"]


def test_plugin_manager_loads_it_by_name() -> None:
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("calculator",)))
    spec = registry.resolve("calculator")
    assert registry.names() == ["calculator"] and spec.tools == ("calculate", "convert_units")
    assert "myagent-ws-calculator" in spec.source


async def test_session_through_the_server(aiohttp_server: Any) -> None:
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("calculator",)))
    app = create_app(Settings(host="127.0.0.1", port=0), registry, pm=pm)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/")) as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "system.connected"
        await ws.send_json({"event": "user.create_session", "content": {"agent": "calculator"}})
        created = await receive_until(ws, "agent.session_created")
        sid = created["session_id"]
        question = "calculate 12 * (3 + 4)"
        await ws.send_json({"event": "user.message", "session_id": sid, "content": question})
        events = await receive_until(ws, "agent.final_answer", collect=True)
    names = [e["event"] for e in events]
    call, result = events[names.index("agent.tool_call")], events[names.index("agent.tool_result")]
    assert call["metadata"]["tool"] == "calculate"
    # The offline model may trim the trailing ")" with the punctuation; calculate closes it.
    assert call["metadata"]["args"]["expression"].startswith("calculate 12 * (3 + 4")
    assert result["metadata"]["call_id"] == call["metadata"]["call_id"]
    assert result["metadata"]["status"] == "success"
    assert result["content"] == "12 * (3 + 4) = 84" and "84" in events[-1]["content"]


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
