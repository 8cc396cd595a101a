"""ReactAgent: the ReAct loop, step events, memory, clones, tool failures, limits, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from myagent import (
    AgentError,
    BaseTool,
    ConfirmRequest,
    FinalAnswer,
    FunctionModel,
    LLMError,
    MaxStepsError,
    ModelReply,
    OfflineModel,
    ReactAgent,
    Thinking,
    ToolCall,
    ToolCallRequest,
    ToolFinished,
    ToolResult,
    create_react_agent,
)
from myagent.tool.base_tool import validator_for
from tests.agents import NotesTool, notes_agent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def weather() -> ReactAgent:
    return load_example("ws_weather_agent").agent.clone()


async def collect(agent: ReactAgent, text: str) -> list[Any]:
    return [step async for step in agent.run(text)]


def of(kind: type, steps: list[Any]) -> list[Any]:
    return [s for s in steps if isinstance(s, kind)]


class Echo(BaseTool):
    name = "echo"
    description = "Echo the text back."
    parameters = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["text"],
    }

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def execute(self, text: str, times: int = 1) -> ToolResult:
        self.calls.append(text)
        return ToolResult(output=text * times)


class Boom(BaseTool):
    name = "boom"
    description = "Always raises."

    async def execute(self) -> ToolResult:
        raise RuntimeError("kaput")


class Plain(BaseTool):
    name = "plain"
    description = "Returns a plain str and a dict."
    parameters = {"type": "object", "properties": {"kind": {"type": "string"}}}

    async def execute(self, kind: str = "str") -> Any:
        return "plain text" if kind == "str" else {"温度": 25}


def script(*replies: ModelReply | str) -> FunctionModel:
    """A model that plays the given replies in order, one per LLM step."""
    queue = list(replies)

    def scripted(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        return queue.pop(0)

    return FunctionModel(scripted)


def call(name: str, arguments: str, call_id: str = "call_1") -> ModelReply:
    return ModelReply(tool_calls=[ToolCallRequest(call_id, name, arguments)])


def tool_then_answer(name: str, arguments: str) -> FunctionModel:
    """Calls one tool on each user message, then answers "saw: <the tool's output>"."""

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        last = messages[-1]
        if last["role"] == "user":
            return call(name, arguments, f"call_{len(messages)}")
        return "saw: " + last["content"]

    return FunctionModel(model)


# --- the seed's agent file and the weather example on the offline model ---------------


def test_seed_greeter_file_runs_with_asyncio_run() -> None:
    """The seed README's own test snippet, run as the user would, in the file's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MYAGENT_"))}
    snippet = (
        "import asyncio\n"
        "from my_agent import agent\n"
        "result = asyncio.run(agent.arun('测试消息'))\n"
        "print(result)\n"
        "print(asyncio.run(agent.arun('Please greet Alice')))\n"
    )
    run = [sys.executable, "-c", snippet]
    done = subprocess.run(run, cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert "测试消息" in first
    assert "Hello, Alice!" in second


async def test_greeter_calls_its_tool_in_process() -> None:
    agent = load_example("my_agent").agent.clone()
    steps = await collect(agent, "Please greet Alice")
    (tool_call,) = of(ToolCall, steps)
    assert (tool_call.tool, tool_call.args) == ("greet", {"name": "Alice"})
    assert of(ToolFinished, steps)[0].output == "Hello, Alice!"
    assert agent.model is not None and agent.model.offline  # resolved from the env, cached
    assert agent.max_steps == 3 and agent.system_prompt == "You are a friendly assistant."


async def test_memory_persists_across_turns(weather) -> None:
    await weather.arun("北京今天天气怎么样？")
    assert [m["role"] for m in weather.messages] == ["user", "assistant", "tool", "assistant"]
    assert weather.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert weather.messages[2]["tool_call_id"] == weather.messages[1]["tool_calls"][0]["id"]
    await weather.arun("告诉我上海的基本信息")
    assert len(weather.messages) == 8
    assert all(m["role"] != "system" for m in weather.messages)

    seen: list[list[dict[str, Any]]] = []

    def counting(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return f"{sum(m['role'] == 'user' for m in messages)} user messages"

    agent = create_react_agent(
        "counter", tools=[], system_prompt="Count.", model=FunctionModel(counting)
    )
    assert await agent.arun("one") == "1 user messages"
    assert await agent.arun("two") == "2 user messages"
    assert seen[1][0] == {"role": "system", "content": "Count."}
    assert [m["content"] for m in seen[1][1:]] == ["one", "1 user messages", "two"]


async def test_clone_has_same_config_empty_memory_and_its_own_tools() -> None:
    model = tool_then_answer("echo", '{"text": "hi"}')
    agent = create_react_agent(
        "a",
        tools=[Echo()],
        system_prompt="s",
        max_steps=4,
        description="d",
        model=model,
        confirm_tools=["echo"],
    )
    await agent.arun("first", confirm=lambda request: True)
    twin = agent.clone()
    assert (twin.name, twin.system_prompt, twin.max_steps, twin.description) == ("a", "s", 4, "d")
    assert twin.model is agent.model and twin.confirm_tools == {"echo"}
    assert twin.messages == [] and len(agent.messages) == 4
    assert twin.tools[0] is not agent.tools[0] and type(twin.tools[0]) is Echo
    await twin.arun("second")
    assert len(agent.messages) == 4 and len(twin.messages) == 4
    twin.tools[0].calls = ["replaced"]
    assert agent.tools[0].calls != ["replaced"]


# --- sessions: each clone has its own tools; what a tool shares on purpose ---------------


async def test_clones_do_not_see_each_others_tool_state() -> None:
    agent = notes_agent()
    original = agent.tools[0]
    alice, bob = agent.clone(), agent.clone()
    assert await alice.arun("alice secret") == "done: alice secret"
    assert await bob.arun("bob plan") == "done: bob plan"  # not "alice secret | bob plan"
    assert await alice.arun("alice again") == "done: alice secret | alice again"
    assert bob.tools[0].notes == ["bob plan"]
    assert bob.tools[0].by_word == {"bob": ["bob plan"], "plan": ["bob plan"]}
    assert original.notes == [] and original.by_word == {}


async def test_nested_tool_state_is_copied_all_the_way_down() -> None:
    agent = notes_agent()
    agent.tools[0].by_word["todo"] = ["seeded"]  # a dict of lists, filled before cloning
    alice, bob = agent.clone(), agent.clone()
    await alice.arun("todo alice")
    await bob.arun("todo bob")
    assert alice.tools[0].by_word["todo"] == ["seeded", "todo alice"]
    assert bob.tools[0].by_word["todo"] == ["seeded", "todo bob"]
    assert agent.tools[0].by_word == {"todo": ["seeded"]}
    assert isinstance(alice.tools[0], NotesTool) and alice.tools[0].name == "note"


class Client:
    """Stands in for an HTTP client: one for every session."""

    def __init__(self) -> None:
        self.requests: list[str] = []


class Fetch(BaseTool):
    name = "fetch"
    description = "Fetch a page with the shared client."
    shared = ("client",)

    def __init__(self) -> None:
        self.client = Client()
        self.seen: list[Any] = [self.client]  # the shared object, also reached another way
        self.parameters = {"type": "object", "properties": {"url": {"type": "string"}}}

    async def execute(self, url: str = "") -> str:
        self.client.requests.append(url)
        self.seen.append(url)
        return "ok"


async def test_shared_attributes_are_the_same_object_in_every_clone() -> None:
    agent = create_react_agent("f", tools=[Fetch()], model=tool_then_answer("fetch", "{}"))
    original = agent.tools[0]
    first, second = agent.clone().tools[0], agent.clone().tools[0]
    assert first.client is original.client and second.client is original.client
    assert first.seen[0] is original.client  # shared wherever it is reached from
    assert first.seen is not original.seen and second.seen is not first.seen
    assert first.parameters is original.parameters  # the schema too: compiled once
    await first.execute(url="a")
    assert original.client.requests == ["a"] and original.seen == [original.client]


class Locked(BaseTool):
    name = "locked"
    description = "Holds a lock, which cannot be copied."

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: list[int] = []

    async def execute(self) -> str:
        return "ok"


def test_an_uncopyable_attribute_fails_at_clone_time_with_a_way_out() -> None:
    agent = create_react_agent("l", tools=[Locked()])
    with pytest.raises(TypeError) as caught:
        agent.clone()
    message = str(caught.value)
    assert message.startswith("Locked ") and "lock attribute 'lock'" in message
    assert 'shared = ("lock",)' in message and "execute" in message

    class SharedLock(Locked):
        shared = ("lock",)

    agent = create_react_agent("s", tools=[SharedLock()])
    twin = agent.clone()
    assert twin.tools[0].lock is agent.tools[0].lock
    assert twin.tools[0].hits is not agent.tools[0].hits


def test_shared_must_be_a_tuple_of_names() -> None:
    with pytest.raises(TypeError, match=r'shared = \("client",\)'):

        class Wrong(BaseTool):
            name = "wrong"
            shared = "client"


def test_duck_typed_tools_are_deep_copied() -> None:
    class Duck:
        name = "duck"

        def __init__(self) -> None:
            self.items: list[str] = []

        async def execute(self) -> str:
            return "quack"

    duck = Duck()
    twin = create_react_agent("d", tools=[duck]).clone().tools[0]
    assert type(twin) is Duck and twin is not duck and twin.items is not duck.items


# --- bounded memory: the last whole turns are kept ---------------------------------------


async def test_memory_keeps_the_last_whole_turns_and_the_system_prompt() -> None:
    seen: list[list[dict[str, Any]]] = []

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        seen.append(messages)
        last = messages[-1]
        if last["role"] == "user" and last["content"] == "three":
            return call("echo", '{"text": "x"}', "call_three")
        return "re: " + last["content"]

    agent = create_react_agent(
        "m", tools=[Echo()], system_prompt="sys", model=FunctionModel(model), max_history_turns=2
    )
    for text in ("one", "two", "three", "four"):
        await agent.arun(text)
    await agent.arun("five")
    prompt = seen[-1]
    assert [(m["role"], m["content"]) for m in prompt] == [
        ("system", "sys"),
        ("user", "three"),
        ("assistant", None),
        ("tool", "x"),
        ("assistant", "re: x"),
        ("user", "four"),
        ("assistant", "re: four"),
        ("user", "five"),
    ]
    assert prompt[2]["tool_calls"][0]["id"] == prompt[3]["tool_call_id"] == "call_three"
    assert [m["content"] for m in agent.messages] == ["four", "re: four", "five", "re: five"]


async def test_memory_is_trimmed_before_the_final_answer_is_yielded() -> None:
    agent = create_react_agent(
        "t", tools=[Echo()], model=tool_then_answer("echo", '{"text": "y"}'), max_history_turns=1
    )
    await agent.arun("first")
    async for step in agent.run("second"):
        if isinstance(step, FinalAnswer):
            break  # a consumer that stops at the answer still leaves bounded memory
    assert [m["role"] for m in agent.messages] == ["user", "assistant", "tool", "assistant"]
    assert agent.messages[0]["content"] == "second"


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_max_history_turns_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(ValueError, match="max_history_turns"):
        create_react_agent("bad", max_history_turns=value)


def test_clone_keeps_max_history_turns() -> None:
    agent = create_react_agent("k", max_history_turns=3)
    twin = agent.clone()
    assert twin.max_history_turns == 3
    assert create_react_agent("n").clone().max_history_turns is None


# --- tool failures are fed back to the model, never a crash -----------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{}", "Invalid arguments for echo: 'text' is a required property"),
        ('{"text": 5}', "Invalid arguments for echo: at 'text': 5 is not of type 'string'"),
        (
            '{"text": "x", "times": 0}',
            "Invalid arguments for echo: at 'times': 0 is less than the minimum of 1",
        ),
        ('{"text": ', "Invalid arguments for echo: the arguments are not valid JSON"),
        ("[1, 2]", "Invalid arguments for echo: expected a JSON object, got list."),
    ],
)
async def test_invalid_arguments_become_an_error_result(arguments: str, expected: str) -> None:
    echo = Echo()
    agent = create_react_agent("v", tools=[echo], model=tool_then_answer("echo", arguments))
    steps = await collect(agent, "go")
    (finished,) = of(ToolFinished, steps)
    assert finished.status == "error" and finished.output.startswith(expected)
    assert echo.calls == []
    assert steps[-1].text == f"saw: {finished.output}"
    # The call event carries the parsed object, or the raw text when it is not one.
    args = of(ToolCall, steps)[0].args
    assert (
        args == json.loads(arguments)
        if arguments.startswith("{") and arguments.endswith("}")
        else args == arguments
    )


async def test_tool_that_raises_becomes_an_error_result_and_the_turn_goes_on() -> None:
    agent = create_react_agent("b", tools=[Boom()], model=tool_then_answer("boom", ""))
    steps = await collect(agent, "go")
    (finished,) = of(ToolFinished, steps)
    assert finished.status == "error"
    # The model reads the exception's text; a client is shown only its type.
    assert finished.output == "The tool boom failed: RuntimeError: kaput"
    assert finished.public == "The tool boom failed (RuntimeError); see the server log."
    assert finished.shown == finished.public
    assert steps[-1].text == "saw: The tool boom failed: RuntimeError: kaput"


async def test_unknown_tool_becomes_an_error_result() -> None:
    agent = create_react_agent("u", tools=[Echo(), Boom()], model=tool_then_answer("nope", "{}"))
    steps = await collect(agent, "go")
    assert of(ToolFinished, steps)[0].output == "Unknown tool 'nope'. Available tools: echo, boom."
    assert of(ToolFinished, steps)[0].status == "error"
    assert isinstance(steps[-1], FinalAnswer)


async def test_plain_str_and_object_outputs_are_accepted() -> None:
    model = script(
        ModelReply(
            tool_calls=[
                ToolCallRequest("c1", "plain", "{}"),
                ToolCallRequest("c2", "plain", '{"kind": "dict"}'),
            ]
        ),
        "done",
    )
    agent = create_react_agent("p", tools=[Plain()], model=model)
    steps = await collect(agent, "go")
    assert [f.output for f in of(ToolFinished, steps)] == ["plain text", '{"温度": 25}']
    assert [f.call_id for f in of(ToolFinished, steps)] == ["c1", "c2"]


async def test_several_tool_calls_in_one_reply_run_in_order() -> None:
    echo = Echo()
    calls = [ToolCallRequest(f"c{i}", "echo", json.dumps({"text": t})) for i, t in enumerate("abc")]
    agent = create_react_agent(
        "o", tools=[echo], model=script(ModelReply(text="Let me see. ", tool_calls=calls), "done")
    )
    steps = await collect(agent, "go")
    assert echo.calls == ["a", "b", "c"]
    kinds = [type(s).__name__ for s in steps]
    assert kinds == [
        "Thinking", "TextDelta",
        "ToolCall", "ToolFinished", "ToolCall", "ToolFinished", "ToolCall", "ToolFinished",
        "Thinking", "TextDelta", "FinalAnswer",
    ]  # fmt: skip
    roles = [m["role"] for m in agent.messages]
    assert roles == ["user", "assistant", "tool", "tool", "tool", "assistant"]
    assert agent.messages[1]["content"] == "Let me see. "


# --- limits, errors and cancellation leave memory as it was -----------------------------


async def test_max_steps_raises_and_restores_memory() -> None:
    model = FunctionModel(lambda m, t: call("echo", '{"text": "again"}', f"c{len(m)}"))
    echo = Echo()
    agent = create_react_agent("loop", tools=[echo], max_steps=3, model=model)
    agent.messages.append({"role": "user", "content": "earlier"})
    before = list(agent.messages)
    steps: list[Any] = []
    with pytest.raises(MaxStepsError) as caught:
        async for step in agent.run("go"):
            steps.append(step)
    assert caught.value.code == "max_steps" and isinstance(caught.value, AgentError)
    assert "3 steps" in str(caught.value) and "max_steps" in str(caught.value)
    assert len(of(Thinking, steps)) == 3
    assert len(echo.calls) == 2  # the last step's calls are not run
    assert agent.messages == before


async def test_llm_error_restores_memory_and_the_next_turn_works() -> None:
    replies: list[Any] = [call("echo", '{"text": "x"}'), LLMError("The LLM is down.")]

    def flaky(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        reply = replies.pop(0) if replies else "fine"
        if isinstance(reply, Exception):
            raise reply
        return reply

    agent = create_react_agent("f", tools=[Echo()], model=FunctionModel(flaky))
    with pytest.raises(LLMError, match="The LLM is down") as caught:
        await agent.arun("one")
    assert caught.value.code == "llm_error"
    assert agent.messages == []
    assert await agent.arun("two") == "fine"
    assert agent.messages == [
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "fine"},
    ]


class Gate(BaseTool):
    name = "gate"
    description = "Waits until the test opens the gate."

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.cancelled = False

    async def execute(self) -> str:
        self.entered.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "opened"


async def test_cancel_mid_tool_propagates_and_restores_memory() -> None:
    gate = Gate()
    agent = create_react_agent("g", tools=[gate], model=tool_then_answer("gate", "{}"))
    gate.opened.set()
    assert await agent.arun("first") == "saw: opened"
    before = [dict(m) for m in agent.messages]
    gate.opened.clear()
    seen: list[Any] = []

    async def consume() -> None:
        async for step in agent.run("second"):
            seen.append(step)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(gate.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert gate.cancelled
    assert isinstance(seen[-1], ToolCall)
    assert agent.messages == before
    gate.opened.set()
    assert await agent.arun("third") == "saw: opened"
    assert len(agent.messages) == 8


async def test_cancel_during_the_model_stream_propagates() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def slow(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        started.set()
        await never.wait()
        return "unreachable"

    agent = create_react_agent("s", tools=[], model=FunctionModel(slow))
    task = asyncio.create_task(agent.arun("hi"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert agent.messages == []


async def test_a_tool_that_hides_cancellation_is_still_cancelled() -> None:
    class Stubborn(Gate):
        async def execute(self) -> str:
            self.entered.set()
            try:
                await self.opened.wait()
            except asyncio.CancelledError:
                raise RuntimeError("cleanup failed") from None
            return "opened"

    tool = Stubborn()
    agent = create_react_agent("h", tools=[tool], model=tool_then_answer("gate", "{}"))
    task = asyncio.create_task(agent.arun("go"))
    await asyncio.wait_for(tool.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert agent.messages == []


async def test_closing_the_step_stream_early_restores_memory() -> None:
    gate = Gate()
    gate.opened.set()
    agent = create_react_agent("c", tools=[gate], model=tool_then_answer("gate", "{}"))
    steps = agent.run("go")
    async for step in steps:
        if isinstance(step, ToolCall):
            break
    assert len(agent.messages) == 2  # mid-turn: user + assistant tool call
    await steps.aclose()
    assert agent.messages == []


# --- models and tools ------------------------------------------------------------------


async def test_model_is_resolved_from_the_environment_once() -> None:
    agent = create_react_agent("env", tools=[])
    assert agent.model is None
    await agent.arun("hello")
    assert isinstance(agent.model, OfflineModel)
    first = agent.model
    await agent.arun("again")
    assert agent.model is first


def test_tool_spec_and_validator_compiled_once() -> None:
    echo = Echo()
    assert echo.to_openai_tool() == {
        "type": "function",
        "function": {
            "name": "echo",
            "description": "Echo the text back.",
            "parameters": Echo.parameters,
        },
    }
    assert validator_for(Echo.parameters) is validator_for(Echo.parameters)
    assert echo.validate_arguments({"text": "ok"}) is None
    assert Boom().to_openai_tool()["function"]["parameters"] == {"type": "object", "properties": {}}


def test_bad_tools_fail_when_the_agent_is_built() -> None:
    from jsonschema.exceptions import SchemaError

    with pytest.raises(SchemaError):

        class Broken(BaseTool):
            name = "broken"
            parameters = {"type": "not-a-type"}

    with pytest.raises(ValueError, match="unique"):
        create_react_agent("dup", tools=[Echo(), Echo()])
    with pytest.raises(TypeError, match="not a tool"):
        create_react_agent("bad", tools=[object()])
    with pytest.raises(ValueError, match="max_steps"):
        create_react_agent("zero", max_steps=0)


# --- tools that need a person's approval --------------------------------------------------


class Pay(Echo):
    name = "pay"
    description = "Pay someone."
    requires_confirmation = True


async def test_a_confirmable_call_waits_for_an_answer_between_call_and_result() -> None:
    agent = create_react_agent("p", tools=[Pay()], model=tool_then_answer("pay", '{"text": "5"}'))
    steps = []
    async with contextlib.aclosing(agent.run("pay 5")) as run:
        async for step in run:
            steps.append(step)
            if isinstance(step, ConfirmRequest):
                assert agent.tools[0].calls == []  # nothing ran yet
                step.approve("go ahead")
    kinds = [type(s).__name__ for s in steps]
    assert kinds[:4] == ["Thinking", "ToolCall", "ConfirmRequest", "ToolFinished"]
    request, finished = steps[2], steps[3]
    assert (request.call_id, request.tool, request.args) == (steps[1].call_id, "pay", {"text": "5"})
    assert finished.status == "success" and finished.reason is None
    assert agent.tools[0].calls == ["5"] and steps[-1].text == "saw: 5"


async def test_an_unanswered_request_is_a_rejection_and_the_tool_never_runs() -> None:
    agent = create_react_agent("p", tools=[Pay()], model=tool_then_answer("pay", '{"text": "5"}'))
    steps = [step async for step in agent.run("pay 5")]  # a consumer that ignores requests
    finished = next(s for s in steps if isinstance(s, ToolFinished))
    assert (finished.status, finished.reason) == ("rejected", "unanswered")
    assert agent.tools[0].calls == []
    assert "no one was asked" in agent.messages[2]["content"]
    assert await agent.arun("again") == "saw: " + agent.messages[-2]["content"]
    assert agent.tools[0].calls == []


async def test_arun_asks_its_confirm_function_sync_or_async() -> None:
    agent = create_react_agent("p", tools=[Pay()], model=tool_then_answer("pay", '{"text": "5"}'))
    asked = []

    async def decline(request: ConfirmRequest) -> bool:
        asked.append(request.tool)
        return False

    answer = await agent.arun("pay 5", confirm=decline)
    assert asked == ["pay"] and agent.tools[0].calls == []
    assert "declined" in answer
    assert await agent.arun("pay 5", confirm=lambda request: True) == "saw: 5"
    assert agent.tools[0].calls == ["5"]


async def test_invalid_arguments_fail_before_anyone_is_asked() -> None:
    agent = create_react_agent("p", tools=[Pay()], model=tool_then_answer("pay", '{"nope": 1}'))
    steps = [step async for step in agent.run("pay")]
    assert not any(isinstance(s, ConfirmRequest) for s in steps)
    assert next(s for s in steps if isinstance(s, ToolFinished)).status == "error"


async def test_confirm_tools_asks_for_a_tool_by_name() -> None:
    agent = create_react_agent(
        "e",
        tools=[Echo()],
        model=tool_then_answer("echo", '{"text": "hi"}'),
        confirm_tools=["echo"],
    )
    assert agent.needs_confirmation(agent.tools[0])
    assert agent.clone().needs_confirmation(agent.clone().tools[0])
    await agent.arun("hi")
    assert agent.tools[0].calls == []


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"confirm_tool": ["echo"]}, TypeError, "'confirm_tool' (did you mean 'confirm_tools'?)"),
        ({"temprature": 0.2}, TypeError, "Unknown agent option 'temprature'"),
        ({"confirm_tools": ["ecko"]}, ValueError, "did you mean 'echo'?"),
        ({"confirm_tools": "echo"}, TypeError, "must be a list of tool names"),
    ],
)
def test_unknown_or_misspelt_options_fail_at_creation(options, error, message) -> None:
    with pytest.raises(error) as raised:
        create_react_agent("e", tools=[Echo()], **options)
    assert message in str(raised.value)
    with pytest.raises(error):
        ReactAgent("e", tools=[Echo()], **options)
