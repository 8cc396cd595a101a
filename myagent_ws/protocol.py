"""The wire protocol: schemas loaded and compiled once, decode(frame) and encode(event).

The JSON files in schemas/ are the contract (docs/protocol.md summarises them); this module
only compiles them and turns their failures into errors a person can act on. References
between schemas resolve through a local registry, never over the network.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

PROTOCOL_VERSION = 1
# Longest session_id, step_id or agent name a client may send (schemas/ say the same), so
# no reply ever echoes an unbounded string back.
MAX_ID_LENGTH = 128


def load_schemas() -> dict[str, dict]:
    """Every schema shipped in the installed package, by name ("envelope", "user.message", …)."""
    folder = files("myagent_ws") / "schemas"
    return {
        entry.name[: -len(".json")]: json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }


_SCHEMAS = load_schemas()
ERROR_CODES: frozenset[str] = frozenset(_SCHEMAS["envelope"]["$defs"]["error_code"]["enum"])
CLIENT_EVENTS: frozenset[str] = frozenset(n for n in _SCHEMAS if n.startswith("user."))
SERVER_EVENTS: frozenset[str] = frozenset(
    n for n in _SCHEMAS if n.startswith(("system.", "agent."))
)
_CLIENT_LIST = ", ".join(sorted(CLIENT_EVENTS))
del _SCHEMAS


class ProtocolError(Exception):
    """A problem with what a client sent (or, in tests, with what the server sent)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str | None = None,
        reason: str | None = None,
        session_id: str | None = None,
        step_id: str | None = None,
        **metadata: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        self.reason = reason
        # Echo the client's session id only when it is one the server could have issued.
        self.session_id = session_id if session_id and len(session_id) <= MAX_ID_LENGTH else None
        self.step_id = step_id  # the step a refused user.response named (already ≤ 128)
        self.metadata = metadata

    def to_event(self) -> dict:
        """The system.error event that tells the client what to fix."""
        return error_event(
            self.code,
            self.message,
            session_id=self.session_id,
            step_id=self.step_id,
            path=self.path,
            reason=self.reason,
            **self.metadata,
        )


def _bundled(schema: dict, schemas: dict[str, dict]) -> dict:
    """`schema` with every reference to another schema file ("envelope.json",
    "envelope.json#/$defs/error_code") replaced by the referenced content."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str) or ref.startswith("#"):
            return {key: walk(value) for key, value in node.items()}
        target, _, pointer = ref.partition("#")
        resolved: Any = schemas[target.removesuffix(".json")]
        for part in filter(None, pointer.split("/")):
            resolved = resolved[part]
        inlined = walk({k: v for k, v in resolved.items() if k not in ("$id", "$schema")})
        rest = {key: walk(value) for key, value in node.items() if key != "$ref"}
        return {"allOf": [inlined], **rest} if rest else inlined

    return walk(schema)


class Protocol:
    """Compiled once at start-up; decode() is the hot path."""

    def __init__(self, max_frame_bytes: int = 1 << 20) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.schemas: dict[str, dict] = load_schemas()
        for schema in self.schemas.values():
            Draft202012Validator.check_schema(schema)
        # References between files are inlined once here, so validating a frame resolves
        # none (resolution per frame cost more than the validation itself).
        bundled = {
            name: _bundled(schema, self.schemas)
            for name, schema in self.schemas.items()
            if name != "envelope"
        }
        # Two validators per schema: jsonschema-rs decides (1.3 µs for a user.message
        # against jsonschema's 210 µs), jsonschema words the errors of the frames it
        # rejects and is the reference if the two ever disagree.
        self._fast = {
            name: jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
            for name, schema in bundled.items()
        }
        self._validators = {
            name: Draft202012Validator(schema, format_checker=None)
            for name, schema in bundled.items()
        }

    def check_size(self, data: str) -> None:
        """message_too_large past max_frame_bytes of UTF-8."""
        limit = self.max_frame_bytes
        # Characters never outnumber UTF-8 bytes, and a character is at most 4 bytes, so
        # the frame only needs encoding when its length alone cannot decide.
        if len(data) > limit or (
            len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit
        ):
            raise ProtocolError(
                "message_too_large",
                f"The message is larger than this server's limit of {limit} bytes; "
                "send a shorter one.",
            )

    def decode(self, data: str) -> dict:
        """The validated client message in one text frame, or ProtocolError saying what to fix."""
        self.check_size(data)
        try:
            message = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                detail = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            else:
                detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ProtocolError(
                "invalid_json",
                f"The frame is not valid JSON ({detail}); send one JSON object per text frame.",
            ) from None
        if not isinstance(message, dict):
            raise ProtocolError(
                "schema_violation",
                f'Each frame must be a JSON object such as {{"event": "user.list_agents"}}, '
                f"not a JSON {_json_type(message)}.",
                path="",
                reason=f"{_short(message)} is not of type 'object'",
            )
        sid = message.get("session_id")
        session_id = sid if isinstance(sid, str) else None
        event = message.get("event")
        if not isinstance(event, str):
            missing = "event" not in message
            raise ProtocolError(
                "schema_violation",
                f'"event" {"is missing" if missing else "is a JSON " + _json_type(event)}; '
                'every frame names its event as a string, e.g. "event": "user.message".',
                path="/event",
                reason="'event' is a required property"
                if missing
                else f"{_short(event)} is not of type 'string'",
                session_id=session_id,
            )
        fast = self._fast.get(event) if event in CLIENT_EVENTS else None
        if fast is None:
            hint = " That is a server event." if event in SERVER_EVENTS else ""
            raise ProtocolError(
                "unknown_event",
                f"Unknown event {_short(event)}.{hint} Clients can send: {_CLIENT_LIST}.",
                session_id=session_id,
            )
        try:
            valid = fast.is_valid(message)
        except UnicodeEncodeError:  # a lone surrogate in a key (jsonschema-rs cannot take it)
            valid = False
        if not valid:
            error = self._violation(event, message, session_id)
            if error is not None:
                raise error
        return message

    def check_outbound(self, event: dict) -> None:
        """Raise ProtocolError("schema_violation") if a server event breaks its schema."""
        name = event.get("event") if isinstance(event, dict) else None
        if name not in SERVER_EVENTS:
            raise ProtocolError(
                "schema_violation",
                f"{_short(name)} is not a server event; expected one of "
                f"{', '.join(sorted(SERVER_EVENTS))}.",
                path="/event",
                reason="unknown server event",
            )
        if not self._fast[name].is_valid(event):
            error = self._violation(name, event, event.get("session_id"))
            if error is not None:
                raise error
        if "seq" in event and event["event_id"] != f"{event['session_id']}:{event['seq']}":
            raise ProtocolError(
                "schema_violation",
                f"{name} has event_id {event['event_id']!r}; it must be session_id:seq.",
                path="/event_id",
                reason="event_id does not match session_id and seq",
            )

    def _violation(self, event: str, message: dict, session_id: Any) -> ProtocolError | None:
        """The most relevant failure, pointed at the field to fix (failure path only);
        None if jsonschema finds the message valid after all."""
        error: ValidationError | None = best_match(self._validators[event].iter_errors(message))
        if error is None:
            return None
        parts = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            parts.append(next(p for p in error.validator_value if p not in error.instance))
        path = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
        reason = _shorten_reason(error)
        hint = _describe(self.schemas[event], parts)
        return ProtocolError(
            "schema_violation",
            f"Invalid {event} at {path or 'the top level'}: {reason}."
            + (f" Expected {parts[-1]}: {hint}" if hint else ""),
            path=path,
            reason=reason,
            session_id=session_id if isinstance(session_id, str) else None,
        )


def _describe(schema: dict, parts: list) -> str | None:
    """The schema's description of the field at `parts`, to tell the client what belongs there."""
    node: Any = schema
    for part in parts:
        node = node.get("properties", {}).get(part) if isinstance(node, dict) else None
    return node.get("description") if parts and isinstance(node, dict) else None


def _shorten_reason(error: ValidationError) -> str:
    """jsonschema's message, with the offending value abbreviated instead of dumped whole."""
    text = error.message
    if error.context and all(c.validator == "required" for c in error.context):
        # anyOf of alternatives ("approved" or "confirmed"): name them, not the instance.
        names = ", ".join(repr(n) for c in error.context for n in c.validator_value)
        text = f"needs one of the properties {names}"
    elif error.validator != "required":
        full = repr(error.instance)
        if len(full) > 60 and text.startswith(full):
            text = _short(error.instance) + text[len(full) :]
    return text if len(text) <= 300 else text[:299] + "…"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…" + text[-1]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_ENCODE_OPTIONS = orjson.OPT_NON_STR_KEYS
_fallback_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)


def encode(event: dict) -> bytes:
    """The event as compact UTF-8 JSON bytes: encoded once, sent as a text frame as it is.
    A stray non-JSON value becomes its str() rather than failing a turn halfway through;
    text that is not valid Unicode (lone surrogates from a client's escapes) is sent as
    ASCII escapes instead of breaking the frame."""
    try:
        # orjson's result keeps its working buffer (4 KiB for a 200-byte frame, ~10x for a
        # large one); the copy is right-sized, so buffered frames cost what they weigh.
        return bytes(memoryview(orjson.dumps(event, default=str, option=_ENCODE_OPTIONS)))
    except (orjson.JSONEncodeError, TypeError):
        return _fallback_encoder.encode(event).encode("ascii")


def cut_content(event: dict[str, Any], content: str, limit: int) -> None:
    """Cut string content to `limit` UTF-8 bytes for the wire, saying so in metadata."""
    data = content.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return
    event["content"] = data[:limit].decode("utf-8", "ignore")
    metadata = dict(event.get("metadata") or {})
    metadata["truncated"] = True
    metadata["original_bytes"] = len(data)
    event["metadata"] = metadata


_second: list[Any] = [None, ""]  # the last whole second seen, and its formatted text


def now_iso() -> str:
    """UTC ISO-8601 with milliseconds and offset, e.g. 2026-01-01T12:00:00.000+00:00.
    Every event carries one: the date part is formatted once per second (a quarter of
    the cost of datetime.isoformat per event)."""
    ms = time.time_ns() // 1_000_000
    second, millis = divmod(ms, 1000)
    if second != _second[0]:
        _second[0] = second
        _second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{millis:03d}+00:00"


def make_event(
    event: str,
    *,
    session_id: str | None = None,
    content: Any = None,
    metadata: dict | None = None,
    step_id: str | None = None,
) -> dict:
    """A server event with its timestamp set; fields that are None are left out."""
    message: dict[str, Any] = {"event": event}
    if session_id is not None:
        message["session_id"] = session_id
    if step_id is not None:
        message["step_id"] = step_id
    if content is not None:
        message["content"] = content
    if metadata is not None:
        message["metadata"] = metadata
    message["timestamp"] = now_iso()
    return message


def error_event(
    code: str,
    message: str,
    *,
    session_id: str | None = None,
    step_id: str | None = None,
    **metadata: Any,
) -> dict:
    """A system.error; metadata entries that are None are left out."""
    meta = {"code": code, **{k: v for k, v in metadata.items() if v is not None}}
    return make_event(
        "system.error", session_id=session_id, step_id=step_id, content=message, metadata=meta
    )


def requested_agent(message: dict) -> str | None:
    """The agent a user.create_session names: content.agent, else metadata.agent.
    A plain-string content (old clients send "create_session") names no agent."""
    for holder in (message.get("content"), message.get("metadata")):
        if isinstance(holder, dict):
            name = holder.get("agent")
            if isinstance(name, str) and name:
                return name
    return None


def response_approved(message: dict) -> bool:
    """Whether a user.response approves: `approved`, or its synonym `confirmed`."""
    content = message.get("content")
    if not isinstance(content, dict):
        return False
    value = content.get("approved", content.get("confirmed"))
    return value is True
