"""Step events an agent yields during one turn. The server maps each one to a wire event
(Thinking -> agent.thinking, TextDelta -> agent.partial_answer, ...); other consumers can
render them however they like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(slots=True)
class Thinking:
    """An LLM step starts (steps count from 1 within a turn)."""

    step: int


@dataclass(slots=True)
class TextDelta:
    """A piece of streamed model text, in order."""

    step: int
    text: str


@dataclass(slots=True)
class ToolCall:
    """A tool is about to run. `args` is the parsed object, or the raw text if not JSON."""

    step: int
    call_id: str
    tool: str
    args: dict[str, Any] | str


@dataclass(slots=True)
class ToolFinished:
    """A tool call ended; on "error", `output` is a sentence saying what went wrong."""

    step: int
    call_id: str
    tool: str
    output: str
    status: Literal["success", "error"]
    duration_ms: float


@dataclass(slots=True)
class FinalAnswer:
    """The turn's complete answer: always the last event of a successful turn."""

    text: str


StepEvent = Thinking | TextDelta | ToolCall | ToolFinished | FinalAnswer

__all__ = ["FinalAnswer", "StepEvent", "TextDelta", "Thinking", "ToolCall", "ToolFinished"]
