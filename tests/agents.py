"""Agents for server tests: real tools and FunctionModel scripts, no network."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from myagent import (
    BaseTool,
    FunctionModel,
    Model,
    ModelReply,
    ToolCallRequest,
    ToolResult,
    create_react_agent,
)
from myagent_ws.client import Backoff
from myagent_ws.keys import SESSIONS

# Reconnect delays short enough for tests that cut links.
FAST = Backoff(initial_s=0.02, max_s=0.2)


class WaitTool(BaseTool):
    """Blocks until its class-level gate opens: lets tests catch a turn mid-tool."""

    name = "wait"
    description = "Wait for the gate."
    parameters = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}
    gates: dict[str, asyncio.Event] = {}
    started: dict[str, asyncio.Event] = {}

    @classmethod
    def gate(cls, key: str) -> asyncio.Event:
        return cls.gates.setdefault(key, asyncio.Event())

    @classmethod
    def entered(cls, key: str) -> asyncio.Event:
        return cls.started.setdefault(key, asyncio.Event())

    async def execute(self, key: str) -> ToolResult:
        self.entered(key).set()
        await self.gate(key).wait()
        return ToolResult(output=f"gate {key} opened")


def key() -> str:
    """A gate name no other test uses (WaitTool's gates are shared by the whole class)."""
    return uuid.uuid4().hex


def _calls_tool_once(tool: str, args_from_text: Any) -> FunctionModel:
    """Call `tool` with args derived from the user text, then answer with its output."""

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelReply | str:
        last = messages[-1]
        if last["role"] == "tool":
            return f"done: {last['content']}"
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        call = ToolCallRequest(
            id=f"call_{len(messages)}", name=tool, arguments=json.dumps(args_from_text(user))
        )
        return ModelReply(text="", tool_calls=[call])

    model.__name__ = f"calls_{tool}"
    return FunctionModel(model)


def waiting_agent(name: str = "waiter") -> Any:
    """Each user text names a gate; the turn waits in the tool until the test opens it."""
    return create_react_agent(
        name=name,
        tools=[WaitTool()],
        system_prompt="wait",
        model=_calls_tool_once("wait", lambda text: {"key": text}),
        description="Waits on a gate named by the message.",
    )


def counting_agent(name: str = "counter") -> Any:
    """Answers with how many user messages it remembers: shows per-session memory."""

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        seen = [m["content"] for m in messages if m["role"] == "user"]
        return f"{len(seen)}: " + " | ".join(seen)

    return create_react_agent(
        name=name, tools=[], model=FunctionModel(model), description="Counts."
    )


def looping_agent(name: str = "looper", max_steps: int = 3) -> Any:
    """Always asks for another tool call: hits max_steps."""
    return create_react_agent(
        name=name,
        tools=[WaitTool()],
        max_steps=max_steps,
        model=FunctionModel(
            lambda messages, tools: ModelReply(
                tool_calls=[ToolCallRequest(id=f"c{len(messages)}", name="nope", arguments="{}")]
            )
        ),
    )


class NotesTool(BaseTool):
    """Keeps what it is told in instance state: shows whether sessions share tool state."""

    name = "note"
    description = "Remember a note and list every note so far."
    parameters = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.by_word: dict[str, list[str]] = {}

    async def execute(self, text: str) -> ToolResult:
        self.notes.append(text)
        for word in text.split():
            self.by_word.setdefault(word, []).append(text)
        return ToolResult(output=" | ".join(self.notes))


def notes_agent(name: str = "notes") -> Any:
    """Notes each user text with its tool and answers with every note the tool holds."""
    return create_react_agent(
        name=name,
        tools=[NotesTool()],
        model=_calls_tool_once("note", lambda text: {"text": text}),
        description="Notes what it is told.",
    )


class StubbornTool(BaseTool):
    """Ignores cancellation until its gate opens (for 10 s at most): a careless tool."""

    name = "stubborn"
    description = "Wait for the gate, ignoring cancellation."
    parameters = WaitTool.parameters

    async def execute(self, key: str) -> ToolResult:
        WaitTool.entered(key).set()
        for _ in range(200):
            try:
                await asyncio.wait_for(WaitTool.gate(key).wait(), 0.05)
                break
            except (asyncio.CancelledError, TimeoutError):
                continue
        return ToolResult(output=f"stubborn {key} done")


def stubborn_agent(name: str = "stubborn") -> Any:
    """Each user text names a gate; its tool ignores cancellation until the gate opens."""
    return create_react_agent(
        name=name,
        tools=[StubbornTool()],
        model=_calls_tool_once("stubborn", lambda text: {"key": text}),
        description="Waits on a gate, ignoring cancellation.",
    )


class BurstModel(Model):
    """Streams `pieces` text deltas of `size` characters without ever suspending: the
    fastest producer a connection can face."""

    provider = "function"
    offline = True
    model_id = "burst"

    def __init__(self, pieces: int, size: int = 10) -> None:
        self.pieces, self.size = pieces, size

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        piece = "x" * self.size
        for _ in range(self.pieces):
            yield piece
        yield ModelReply(text=piece * self.pieces)


def burst_agent(pieces: int, size: int = 10, name: str = "burst") -> Any:
    return create_react_agent(name=name, tools=[], model=BurstModel(pieces, size))


def big_result_agent(size: int, name: str = "big") -> Any:
    """Its tool returns `size` characters; its model answers with the length it was given,
    which shows whether the model saw the whole result."""

    class BigTool(BaseTool):
        name = "big"
        description = "Return a large text."

        async def execute(self) -> str:
            return "y" * size

    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        if messages[-1]["role"] == "tool":
            return f"the model saw {len(messages[-1]['content'])} characters"
        return ModelReply(tool_calls=[ToolCallRequest(id="c1", name="big", arguments="{}")])

    return create_react_agent(name=name, tools=[BigTool()], model=FunctionModel(model))


class PacedModel(Model):
    """Streams `pieces` numbered deltas, one every `pause_s`: a turn long enough to be cut."""

    provider = "function"
    offline = True
    model_id = "paced"

    def __init__(self, pieces: int, pause_s: float) -> None:
        self.pieces, self.pause_s = pieces, pause_s

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        for i in range(self.pieces):
            await asyncio.sleep(self.pause_s)
            yield f"{i};"
        yield ModelReply(text="".join(f"{i};" for i in range(self.pieces)))


def bookings(server: Any, session_id: str) -> list[dict[str, Any]]:
    """The session's own record of what its book_table tool did (examples/booking_agent.py)."""
    return server.app[SESSIONS].sessions[session_id].agent.tools[0].bookings
