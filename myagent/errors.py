"""Errors an agent turn can end with. Each carries a machine-readable `code` (the server
puts it in `agent.error` metadata) and a message a person can act on (no stack traces)."""

from __future__ import annotations


class AgentError(Exception):
    """A turn failed for a reason worth telling the user; `code` says which kind."""

    code: str = "agent_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class LLMError(AgentError):
    """The model could not be reached or answered with something unusable."""

    def __init__(self, message: str) -> None:
        super().__init__("llm_error", message)


class MaxStepsError(AgentError):
    """The model kept asking for tools after the agent's step budget was spent."""

    def __init__(self, message: str) -> None:
        super().__init__("max_steps", message)
