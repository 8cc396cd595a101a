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
class ConfirmRequest:
    """A tool call waits for a person's approval (the tool `requires_confirmation`, or the
    agent lists it in `confirm_tools`). It comes right after its ToolCall. Whoever reads
    the steps answers with `approve()` or `reject()` before asking for the next step; a
    request still unanswered then counts as rejected, so a consumer that knows nothing of
    approvals can never make such a tool run."""

    step: int
    call_id: str
    tool: str
    args: dict[str, Any]
    approved: bool = False
    # Why it was not approved: "declined" (a person said no), "timeout" (no one answered
    # in time) or "unanswered" (no one was asked).
    reason: str | None = "unanswered"
    feedback: str | None = None

    def approve(self, feedback: str | None = None) -> None:
        self.approved, self.reason, self.feedback = True, None, feedback

    def reject(self, feedback: str | None = None, reason: str = "declined") -> None:
        self.approved, self.reason, self.feedback = False, reason, feedback


@dataclass(slots=True)
class ToolFinished:
    """A tool call ended; on "error", `output` is a sentence saying what went wrong (what
    the model reads); on "rejected" the tool did not run (`reason` as in ConfirmRequest).
    `public`, when set, is the text to show a client instead of `output`: a tool that
    raised gives the model the exception's text, which may name hosts or paths."""

    step: int
    call_id: str
    tool: str
    output: str
    status: Literal["success", "error", "rejected"]
    duration_ms: float
    reason: str | None = None
    public: str | None = None

    @property
    def shown(self) -> str:
        """What a client may see of the result."""
        return self.output if self.public is None else self.public


@dataclass(slots=True)
class FinalAnswer:
    """The turn's complete answer: always the last event of a successful turn."""

    text: str


StepEvent = Thinking | TextDelta | ToolCall | ConfirmRequest | ToolFinished | FinalAnswer

__all__ = [
    "ConfirmRequest",
    "FinalAnswer",
    "StepEvent",
    "TextDelta",
    "Thinking",
    "ToolCall",
    "ToolFinished",
]
