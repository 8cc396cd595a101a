"""Errors an agent turn can end with. Each carries a machine-readable `code` (the server
puts it in `agent.error` metadata), a `message` a person can act on (no stack traces) and
an optional `detail` for the operator only.

`message` may go to any client, so it never holds an internal host, a URL, a file path,
an upstream response body or an exception's text; those go in `detail`. `str(exc)` is
both (for logs and SDK users); `public` is what a server shows a client.
"""

from __future__ import annotations

import re

# Appended to a public text when its detail stays in the server log.
LOG_POINTER = "The server log has the details."


class AgentError(Exception):
    """A turn failed for a reason worth telling the user; `code` says which kind."""

    code: str = "agent_error"

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} {self.detail}" if self.detail else self.message

    @property
    def public(self) -> str:
        """The text a client may see: the message, and where the operator finds the rest."""
        return f"{self.message} {LOG_POINTER}" if self.detail else self.message


class LLMError(AgentError):
    """The model could not be reached or answered with something unusable."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__("llm_error", message, detail)


class MaxStepsError(AgentError):
    """The model kept asking for tools after the agent's step budget was spent."""

    def __init__(self, message: str) -> None:
        super().__init__("max_steps", message)


def tool_failure(tool: str, exc: BaseException) -> tuple[str, str]:
    """(what the model reads, what a client may see) when a tool raised `exc`: the model
    gets the exception's text, which helps it recover; a client gets only its type."""
    kind = type(exc).__name__
    return f"The tool {tool} failed: {kind}: {exc}", public_tool_failure(tool, kind)


def public_tool_failure(tool: str, kind: str) -> str:
    return f"The tool {tool} failed ({kind}); see the server log."


# What tool_failure gives the model, for a model (the offline one) that repeats tool
# outputs to the user: it repeats the public text instead.
_TOOL_FAILED = re.compile(r"The tool (\S+) failed: (\w+): ")


def hide_tool_failure(output: str) -> str:
    """`output`, or its public text if it is a tool_failure text for the model."""
    found = _TOOL_FAILED.match(output)
    return public_tool_failure(*found.groups()) if found else output


__all__ = [
    "LOG_POINTER",
    "AgentError",
    "LLMError",
    "MaxStepsError",
    "hide_tool_failure",
    "public_tool_failure",
    "tool_failure",
]
