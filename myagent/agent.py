"""ReactAgent: the ReAct loop (ask the model, run the tools it asks for, repeat) with
conversation memory. A turn is all-or-nothing for memory: if it fails or is cancelled,
`messages` is put back as it was, so the next turn starts from a consistent history.
With `max_history_turns`, only the last whole turns are kept after each turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .errors import LLMError, MaxStepsError
from .events import FinalAnswer, StepEvent, TextDelta, Thinking, ToolCall, ToolFinished
from .llm import Model, ModelReply, ToolCallRequest, model_from_env
from .tool.base_tool import BaseTool, ToolResult, output_text


class ReactAgent:
    """An LLM agent with tools. `run` streams one turn's steps; `arun` returns the answer."""

    def __init__(
        self,
        name: str,
        tools: Sequence[BaseTool] = (),
        system_prompt: str = "",
        max_steps: int = 10,
        description: str = "",
        model: Model | None = None,
        *,
        max_history_turns: int | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("An agent needs a name, e.g. create_react_agent(name='helper', ...).")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, not {max_steps!r}.")
        if max_history_turns is not None and (
            isinstance(max_history_turns, bool)
            or not isinstance(max_history_turns, int)
            or max_history_turns < 1
        ):
            raise ValueError(
                "max_history_turns must be a positive integer or None (keep every turn), "
                f"not {max_history_turns!r}."
            )
        self.name = name
        self.description = description
        self.tools: list[BaseTool] = list(tools)
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.model = model
        self.max_history_turns = max_history_turns
        self.options = options  # extra keyword arguments, kept for clones
        self.messages: list[dict[str, Any]] = []
        _check_tools(self.tools)

    def __repr__(self) -> str:
        tools = ", ".join(tool.name for tool in self.tools)
        return f"<ReactAgent {self.name!r} tools=[{tools}]>"

    def clone(self) -> ReactAgent:
        """Same configuration and model, empty memory, its own copy of each tool: one
        session's tool state (a list, a dict) must never reach another session."""
        return type(self)(
            name=self.name,
            tools=[_clone_tool(tool) for tool in self.tools],
            system_prompt=self.system_prompt,
            max_steps=self.max_steps,
            description=self.description,
            model=self.model,
            max_history_turns=self.max_history_turns,
            **self.options,
        )

    async def arun(self, text: str) -> str:
        """Run one turn and return the final answer."""
        answer = ""
        async with contextlib.aclosing(self.run(text)) as steps:
            async for step in steps:
                if isinstance(step, FinalAnswer):
                    answer = step.text
        return answer

    async def run(self, text: str) -> AsyncIterator[StepEvent]:
        """Run one turn, yielding its step events; FinalAnswer comes last."""
        if self.model is None:
            self.model = model_from_env()
        model = self.model
        before = list(self.messages)
        done = False
        try:
            self.messages.append({"role": "user", "content": text})
            tools = {tool.name: tool for tool in self.tools}
            specs = [tool.to_openai_tool() for tool in self.tools]
            for step in range(1, self.max_steps + 1):
                yield Thinking(step)
                reply: ModelReply | None = None
                async with _closing(model.stream(self._prompt(), specs)) as stream:
                    async for item in stream:
                        if isinstance(item, ModelReply):
                            reply = item
                        elif item:
                            yield TextDelta(step, item)
                if reply is None:
                    raise LLMError(
                        f"The model {model.model_id!r} ended its reply without a result."
                    )
                if not reply.tool_calls:
                    self.messages.append({"role": "assistant", "content": reply.text})
                    self._forget_old_turns()  # before the answer: a consumer may stop there
                    done = True
                    yield FinalAnswer(reply.text)
                    return
                if step == self.max_steps:
                    wanted = ", ".join(call.name for call in reply.tool_calls)
                    raise MaxStepsError(
                        f"The agent {self.name!r} used all {self.max_steps} steps and the "
                        f"model still wanted to call tools ({wanted}) instead of answering. "
                        "Raise max_steps or make the request simpler."
                    )
                self.messages.append(_assistant_message(reply))
                for call in reply.tool_calls:
                    args, problem = _parse_arguments(call)
                    yield ToolCall(step, call.id, call.name, args)
                    started = time.perf_counter()
                    output, ok = await self._execute(tools, call, args, problem)
                    duration_ms = (time.perf_counter() - started) * 1000
                    self.messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": output}
                    )
                    status = "success" if ok else "error"
                    yield ToolFinished(step, call.id, call.name, output, status, duration_ms)
        finally:
            if not done:
                self.messages[:] = before

    def _forget_old_turns(self) -> None:
        """Keep the last `max_history_turns` whole turns. A turn runs from a user message to
        the next one, tool calls and results included: a tool result without its call is
        rejected by the API. Scans back over the kept turns only."""
        limit = self.max_history_turns
        if limit is None:
            return
        turns = 0
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index].get("role") == "user":
                turns += 1
                if turns == limit:
                    del self.messages[:index]
                    return

    def _prompt(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + self.messages

    async def _execute(
        self,
        tools: dict[str, BaseTool],
        call: ToolCallRequest,
        args: dict[str, Any] | str,
        problem: str | None,
    ) -> tuple[str, bool]:
        """Run one tool call; every failure becomes (a sentence for the model, False)."""
        tool = tools.get(call.name)
        if tool is None:
            known = ", ".join(tools) or "none"
            return f"Unknown tool {call.name!r}. Available tools: {known}.", False
        if problem is not None or not isinstance(args, dict):
            return f"Invalid arguments for {call.name}: {problem}", False
        invalid = tool.validate_arguments(args)
        if invalid is not None:
            return invalid, False
        try:
            result = tool.execute(**args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The tool turned our cancellation into another error: cancel anyway.
                raise asyncio.CancelledError from exc
            return f"The tool {call.name} failed: {type(exc).__name__}: {exc}", False
        if isinstance(result, ToolResult):
            if result.error is not None:
                return str(result.error) or f"The tool {call.name} failed.", False
            return output_text(result.output), True
        return output_text(result), True


def _clone_tool(tool: BaseTool) -> BaseTool:
    """A tool's copy for a new session: its own `clone` (BaseTool's keeps `shared`
    attributes), else a deep copy for duck-typed tools."""
    clone = getattr(tool, "clone", None)
    return clone() if callable(clone) else copy.deepcopy(tool)


def _check_tools(tools: list[BaseTool]) -> None:
    """Fail at agent creation (the server's load time) on tools that cannot work."""
    seen: set[str] = set()
    for tool in tools:
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not name or not callable(getattr(tool, "execute", None)):
            raise TypeError(
                f"{tool!r} is not a tool: subclass BaseTool, set `name`, `description` and "
                "`parameters`, and write `async def execute(self, ...)`."
            )
        if name in seen:
            raise ValueError(f"Two tools are named {name!r}; tool names must be unique.")
        seen.add(name)


def _parse_arguments(call: ToolCallRequest) -> tuple[dict[str, Any] | str, str | None]:
    """(the arguments object, None), or (the raw text, why it is not usable)."""
    raw = call.arguments
    if raw is None or not str(raw).strip():
        return {}, None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        reason = getattr(exc, "msg", str(exc))
        return str(raw), f"the arguments are not valid JSON ({reason})."
    if not isinstance(value, dict):
        return str(raw), f"expected a JSON object, got {type(value).__name__}."
    return value, None


def _assistant_message(reply: ModelReply) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": reply.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ],
    }


@contextlib.asynccontextmanager
async def _closing(stream: Any) -> AsyncIterator[Any]:
    """Close the model's stream when the step ends early (cancel, error), if it can be."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def create_react_agent(
    name: str,
    tools: Sequence[BaseTool] = (),
    system_prompt: str = "",
    max_steps: int = 10,
    **kwargs: Any,
) -> ReactAgent:
    """Build a ReAct agent; other keywords (description, model, ...) go to ReactAgent.
    With no `model`, one is taken from the environment at first run (OPENAI_API_KEY /
    OPENAI_BASE_URL / MYAGENT_MODEL, else the offline model)."""
    return ReactAgent(name, tools, system_prompt, max_steps, **kwargs)


__all__ = ["ReactAgent", "create_react_agent"]
