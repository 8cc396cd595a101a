"""BaseTool: what an agent can call. A tool declares `name`, `description` and
`parameters` (JSON Schema) as class attributes and implements `async execute(**kwargs)`.
Arguments are checked against `parameters` before `execute` runs, so tools can trust them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

# parameters dict id -> (the dict itself, its compiled validator). Holding the dict keeps its
# id from being reused, so each schema is compiled once however many calls or clones use it.
_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


@dataclass(slots=True)
class ToolResult:
    """What a tool returns: `output` on success, `error` (a sentence) on failure."""

    output: Any = ""
    error: str | None = None

    def __str__(self) -> str:
        return self.error if self.error is not None else output_text(self.output)


def output_text(value: Any) -> str:
    """A tool's output as the text the model reads."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def validator_for(parameters: dict[str, Any]) -> Draft202012Validator:
    """The compiled validator for a parameters schema (compiled on first use only)."""
    cached = _VALIDATORS.get(id(parameters))
    if cached is not None and cached[0] is parameters:
        return cached[1]
    Draft202012Validator.check_schema(parameters)
    validator = Draft202012Validator(parameters)
    if len(_VALIDATORS) > 4096:  # tools built with fresh dicts over and over: stay bounded
        _VALIDATORS.clear()
    _VALIDATORS[id(parameters)] = (parameters, validator)
    return validator


class BaseTool:
    """Subclass it, set the three class attributes, and write `execute`."""

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = EMPTY_PARAMETERS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A broken schema should fail when the agent file is imported, not mid-conversation.
        super().__init_subclass__(**kwargs)
        if "parameters" in cls.__dict__ and isinstance(cls.parameters, dict):
            validator_for(cls.parameters)

    async def execute(self, **kwargs: Any) -> ToolResult | str:
        """Run the tool; report failure with `ToolResult(error=...)`."""
        raise NotImplementedError(f"{type(self).__name__} must implement async execute()")

    def to_openai_tool(self) -> dict[str, Any]:
        """The tool in OpenAI chat-completions `tools` form."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters or EMPTY_PARAMETERS,
            },
        }

    def validate_arguments(self, arguments: Any) -> str | None:
        """None if `arguments` fit `parameters`, else a sentence saying what is wrong."""
        error = best_match(
            validator_for(self.parameters or EMPTY_PARAMETERS).iter_errors(arguments)
        )
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path)
        detail = f"at '{where}': {error.message}" if where else error.message
        return f"Invalid arguments for {self.name}: {detail}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


__all__ = ["BaseTool", "ToolResult", "output_text", "validator_for"]
