"""BaseTool: what an agent can call. A tool declares `name`, `description` and
`parameters` (JSON Schema) as class attributes and implements `async execute(**kwargs)`.
Arguments are checked against `parameters` before `execute` runs, so tools can trust them.
Each session gets its own deep copy of every tool (`clone`); attributes named in `shared`
are the same object in every copy.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Self

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
_MISSING = object()

# parameters dict id -> (the dict itself, its compiled validator). Holding the dict keeps its
# id from being reused, so each schema is compiled once however many calls or clones use it.
_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator, Any]] = {}


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
    return _compiled(parameters)[1]


def _compiled(parameters: dict[str, Any]) -> tuple[Any, Draft202012Validator, Any]:
    """(parameters, jsonschema validator, jsonschema-rs validator or None), cached: the
    fast one decides each tool call (microseconds instead of a tenth of a millisecond),
    jsonschema words what is wrong."""
    cached = _VALIDATORS.get(id(parameters))
    if cached is not None and cached[0] is parameters:
        return cached
    Draft202012Validator.check_schema(parameters)
    try:
        fast = jsonschema_rs.validator_for(parameters, validate_formats=False)
    except Exception:  # a schema only jsonschema accepts: it decides alone
        fast = None
    if len(_VALIDATORS) > 4096:  # tools built with fresh dicts over and over: stay bounded
        _VALIDATORS.clear()
    cached = _VALIDATORS[id(parameters)] = (parameters, Draft202012Validator(parameters), fast)
    return cached


class BaseTool:
    """Subclass it, set the three class attributes, and write `execute`."""

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = EMPTY_PARAMETERS
    # Instance attributes every session's copy uses as they are, on purpose: an HTTP
    # client, a connection pool, a read-only cache. Everything else is deep-copied.
    shared: tuple[str, ...] = ()
    # Every call waits for a person's approval first (agent.user_confirm); rejected or
    # unanswered, the tool does not run. An agent can also ask it with confirm_tools=[...].
    requires_confirmation: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A broken schema should fail when the agent file is imported, not mid-conversation.
        super().__init_subclass__(**kwargs)
        if "parameters" in cls.__dict__ and isinstance(cls.parameters, dict):
            validator_for(cls.parameters)
        shared = cls.__dict__.get("shared", ())
        if not isinstance(shared, tuple) or not all(isinstance(n, str) for n in shared):
            raise TypeError(
                f"{cls.__name__}.shared must be a tuple of attribute names, "
                f'e.g. shared = ("client",), not {shared!r}.'
            )

    def clone(self) -> Self:
        """This tool for a new session: a deep copy, so no list or dict one user fills is
        seen by another, except the `shared` attributes (and the schema), which stay the
        same objects wherever they are reached from."""
        memo = self._shared_memo()
        try:
            return copy.deepcopy(self, memo)
        except (TypeError, copy.Error) as exc:
            raise TypeError(self._uncopyable(exc)) from exc

    def _shared_memo(self) -> dict[int, Any]:
        """A deepcopy memo that maps each shared value to itself, so it is not copied."""
        memo: dict[int, Any] = {}
        # The schema is configuration: sharing it keeps its validator compiled once.
        for name in ("parameters", *self.shared):
            value = getattr(self, name, _MISSING)
            if value is not _MISSING:
                memo[id(value)] = value
        return memo

    def _uncopyable(self, exc: BaseException) -> str:
        """Say which attribute could not be copied and the two ways out."""
        tool = type(self).__name__
        for name, value in getattr(self, "__dict__", {}).items():
            try:
                copy.deepcopy(value, self._shared_memo())
            except (TypeError, copy.Error):
                kind = type(value).__qualname__
                return (
                    f"{tool} cannot be copied for a new session: its {kind} attribute {name!r} "
                    f"cannot be deep-copied ({exc}). To use one for every session, "
                    f'list it: shared = ("{name}",); otherwise create it in execute().'
                )
        return (
            f"{tool} cannot be copied for a new session ({exc}). List the attribute that "
            'holds it in `shared` (e.g. shared = ("client",)) or create it in execute().'
        )

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
        _, validator, fast = _compiled(self.parameters or EMPTY_PARAMETERS)
        if fast is not None and fast.is_valid(arguments):
            return None
        error = best_match(validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path)
        detail = f"at '{where}': {error.message}" if where else error.message
        return f"Invalid arguments for {self.name}: {detail}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


__all__ = ["BaseTool", "ToolResult", "output_text", "validator_for"]
