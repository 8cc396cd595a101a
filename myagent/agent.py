"""ReactAgent: the ReAct loop (ask the model, run the tools it asks for, repeat) with
conversation memory. A turn is all-or-nothing for memory: if it fails or is cancelled,
`messages` is put back as it was, so the next turn starts from a consistent history.
With `max_history_turns`, only the last whole turns are kept after each turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import difflib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from .errors import LLMError, MaxStepsError, tool_failure
from .events import (
    ConfirmRequest,
    FinalAnswer,
    StepEvent,
    TextDelta,
    Thinking,
    ToolCall,
    ToolFinished,
)
from .llm import Model, ModelReply, ToolCallRequest, model_from_env
from .tool.base_tool import BaseTool, ToolResult, output_text

# Tools that raise: the traceback goes here (the server log), never to a client.
tool_log = logging.getLogger("myagent.tools")

# confirm(request) -> approve it? (sync or async), for ReactAgent.arun.
Confirm = Callable[[ConfirmRequest], bool | Awaitable[bool]]


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
        confirm_tools: Sequence[str] = (),
        **unknown: Any,
    ) -> None:
        if unknown:  # a misspelt confirm_tools must not quietly let a tool run unasked
            raise TypeError(_unknown_options(unknown))
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
        self.messages: list[dict[str, Any]] = []
        _check_tools(self.tools)
        self.confirm_tools = _check_confirm_tools(confirm_tools, self.tools)

    def __repr__(self) -> str:
        tools = ", ".join(tool.name for tool in self.tools)
        return f"<ReactAgent {self.name!r} tools=[{tools}]>"

    def clone(self) -> ReactAgent:
        """Same configuration and model, empty memory, its own copy of each tool: one
        session's tool state (a list, a dict) must never reach another session. (A
        subclass whose __init__ takes other arguments overrides this.)"""
        return type(self)(
            name=self.name,
            tools=[_clone_tool(tool) for tool in self.tools],
            system_prompt=self.system_prompt,
            max_steps=self.max_steps,
            description=self.description,
            model=self.model,
            max_history_turns=self.max_history_turns,
            confirm_tools=tuple(self.confirm_tools),
        )

    def needs_confirmation(self, tool: BaseTool) -> bool:
        """Whether a call to `tool` waits for a person's approval first."""
        return tool.name in self.confirm_tools or getattr(tool, "requires_confirmation", False)

    async def arun(self, text: str, confirm: Confirm | None = None) -> str:
        """Run one turn and return the final answer. `confirm(request)` (sync or async)
        returns True to approve a call that needs approval; without it, such calls are
        rejected."""
        answer = ""
        async with contextlib.aclosing(self.run(text)) as steps:
            async for step in steps:
                if isinstance(step, FinalAnswer):
                    answer = step.text
                elif isinstance(step, ConfirmRequest) and confirm is not None:
                    approved = confirm(step)
                    if inspect.isawaitable(approved):
                        approved = await approved
                    if approved:
                        step.approve()
                    else:
                        step.reject()
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
                    tool, output = _checked(tools, call, args, problem)
                    status, reason, duration_ms, public = "error", None, 0.0, None
                    if tool is not None and self.needs_confirmation(tool):
                        request = ConfirmRequest(step, call.id, call.name, args)
                        yield request  # the consumer answers it before asking for more
                        if not request.approved:
                            tool, output = None, _declined(request)
                            status, reason = "rejected", request.reason
                    if tool is not None:
                        started = time.perf_counter()
                        output, ok, public = await _execute(tool, args)
                        duration_ms = (time.perf_counter() - started) * 1000
                        status = "success" if ok else "error"
                    self.messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": output}
                    )
                    yield ToolFinished(
                        step, call.id, call.name, output, status, duration_ms, reason, public
                    )
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


def _checked(
    tools: dict[str, BaseTool],
    call: ToolCallRequest,
    args: dict[str, Any] | str,
    problem: str | None,
) -> tuple[BaseTool | None, str]:
    """(the tool, "") when the call can run, else (None, a sentence for the model)."""
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(tools) or "none"
        return None, f"Unknown tool {call.name!r}. Available tools: {known}."
    if problem is not None or not isinstance(args, dict):
        return None, f"Invalid arguments for {call.name}: {problem}"
    invalid = tool.validate_arguments(args)
    if invalid is not None:
        return None, invalid
    return tool, ""


async def _execute(tool: BaseTool, args: dict[str, Any]) -> tuple[str, bool, str | None]:
    """Run one checked tool call: (output, ok, None). A tool that raises gives (a sentence
    for the model with the exception's text, False, the same without it for clients), and
    its traceback goes to the log; a ToolResult(error=...) is the tool's own message."""
    try:
        result = tool.execute(**args)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The tool turned our cancellation into another error: cancel anyway.
            raise asyncio.CancelledError from exc
        for_model, public = tool_failure(tool.name, exc)
        tool_log.warning("%s", for_model, exc_info=exc)
        return for_model, False, public
    if isinstance(result, ToolResult):
        if result.error is not None:
            return str(result.error) or f"The tool {tool.name} failed.", False, None
        return output_text(result.output), True, None
    return output_text(result), True, None


def _declined(request: ConfirmRequest) -> str:
    """What the model reads instead of a result when a call was not approved."""
    if request.reason == "timeout":
        text = f"No one approved this call to {request.tool} in time, so it did not run."
    elif request.reason == "declined":
        text = f"The user declined this call to {request.tool}, so it did not run."
    else:
        text = (
            f"This call to {request.tool} needs a person's approval; no one was asked, "
            "so it did not run."
        )
    return text + (f" Their feedback: {request.feedback}" if request.feedback else "")


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


def _check_confirm_tools(names: Sequence[str], tools: list[BaseTool]) -> frozenset[str]:
    """confirm_tools as a set; a name that is no tool of the agent is an error, since a
    typo would let the tool it meant run without asking."""
    if isinstance(names, str):
        raise TypeError(f"confirm_tools must be a list of tool names, e.g. [{names!r}].")
    known = {tool.name for tool in tools}
    for name in names:
        if name not in known:
            hint = _closest(str(name), known)
            raise ValueError(
                f"confirm_tools names {name!r}, which is not one of this agent's tools "
                f"({', '.join(sorted(known)) or 'none'})"
                + (f"; did you mean {hint!r}?" if hint else ".")
            )
    return frozenset(names)


def _closest(word: str, choices: Any) -> str | None:
    """The choice `word` was most likely meant to be, if any is close."""
    found = difflib.get_close_matches(word, choices, n=1)
    return found[0] if found else None


def _unknown_options(unknown: dict[str, Any]) -> str:
    """Name each unknown keyword, with the closest real option."""
    parts = []
    for key in unknown:
        hint = _closest(key, AGENT_OPTIONS)
        parts.append(f"{key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    return f"Unknown agent option {', '.join(parts)}. The options are: {', '.join(AGENT_OPTIONS)}."


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


# Every keyword ReactAgent takes; anything else is refused at load time.
AGENT_OPTIONS = tuple(list(inspect.signature(ReactAgent).parameters)[:-1])


def create_react_agent(
    name: str,
    tools: Sequence[BaseTool] = (),
    system_prompt: str = "",
    max_steps: int = 10,
    **kwargs: Any,
) -> ReactAgent:
    """Build a ReAct agent; other keywords (description, model, max_history_turns,
    confirm_tools) go to ReactAgent, and an unknown one raises TypeError. With no `model`,
    one is taken from the environment at first run (OPENAI_API_KEY / OPENAI_BASE_URL /
    MYAGENT_MODEL, else the offline model). `confirm_tools` names tools whose every call
    waits for a person's approval, like a tool with `requires_confirmation = True`."""
    return ReactAgent(name, tools, system_prompt, max_steps, **kwargs)


__all__ = ["ReactAgent", "create_react_agent"]
