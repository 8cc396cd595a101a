"""The Model contract and the OpenAI-compatible model.

A Model streams one reply: text deltas (str) as they arrive, then exactly one ModelReply
with the whole reply. Every failure becomes an LLMError whose message says what kind of
failure it was, for any client, and whose detail names the endpoint, what it said and the
setting to check, for the operator: no one needs a stack trace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
import openai
import orjson

from .errors import LLMError
from .transport import EXTENSION, AiohttpTransport

DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
# Local OpenAI-compatible servers (Ollama, vLLM, llama.cpp) ignore the key but the client
# insists on one.
PLACEHOLDER_KEY = "not-needed"
# What most LLM failures ask the operator to check.
URL_SETTING = "OPENAI_BASE_URL / --llm-base-url"
# The raw request sends a pre-encoded body, so it says what it is.
_JSON_BODY: Any = {"headers": {"Content-Type": "application/json"}}


@dataclass
class ToolCallRequest:
    """One tool call the model asked for; `arguments` is the model's raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass
class ModelReply:
    """A complete model reply: final text, or tool calls to run (text may accompany them)."""

    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)


def new_call_id() -> str:
    """A unique tool-call id in the form OpenAI uses."""
    return f"call_{uuid.uuid4().hex[:12]}"


class Model(ABC):
    """What the agent talks to. Messages and tools are in OpenAI chat-completions form."""

    model_id: str = ""
    provider: str = ""
    offline: bool = False

    def describe(self) -> dict[str, Any]:
        """What the server shows about the model (session metadata, banner)."""
        return {"provider": self.provider, "model": self.model_id, "offline": self.offline}

    @abstractmethod
    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ModelReply]:
        """Yield text deltas, then exactly one ModelReply; raise LLMError on failure."""

    async def aclose(self) -> None:
        """Release connections; the default has none."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id!r}>"


class OpenAIModel(Model):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, llama.cpp…)."""

    provider = "openai"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
    ) -> None:
        self.model_id = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None and self.base_url is not None:
            key = PLACEHOLDER_KEY
        self.api_key = key
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: openai.AsyncOpenAI | None = None
        self._transport = AiohttpTransport()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url}

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages."""
        return self.base_url or OPENAI_URL

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if self.api_key is None:
                raise LLMError(
                    "No API key is configured for the LLM.",
                    f"Set OPENAI_API_KEY, or set {URL_SETTING} to use a local "
                    "OpenAI-compatible server.",
                )
            self._client = openai.AsyncOpenAI(
                api_key=self.api_key,
                base_url=self.base_url,
                # No per-read timeout in the HTTP client: it re-arms a timer on every chunk
                # (6% of the server's CPU when streaming). _Idle watches instead.
                timeout=httpx2.Timeout(self.timeout, read=None),
                max_retries=self.max_retries,
                # aiohttp under the SDK: the server's own stack, no pool scan per request,
                # and the response handed over for streaming (transport.py).
                http_client=httpx2.AsyncClient(transport=self._transport),
            )
        return self._client

    def warm_up(self) -> None:
        """Build the client and its HTTP session now (in the running loop), so the first
        turn does not pay for them on the event loop."""
        if self.api_key is not None:
            self._get_client()
            self._transport.open()

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ModelReply]:
        request: dict[str, Any] = {"model": self.model_id, "messages": messages, "stream": True}
        if tools:
            request["tools"] = tools
        reply = _Reply()
        idle = _Idle(self.timeout)
        try:
            client = self._get_client()
            # The SDK's documented raw path: its configuration, auth, retries and error
            # types, without its per-request transform of the messages or a pydantic
            # object per chunk. The stream is parsed here, one orjson.loads per chunk.
            response = await client.post(
                "/chat/completions",
                content=orjson.dumps(request),
                options=_JSON_BODY,
                cast_to=httpx2.Response,
                stream=True,
            )
            events = _ServerSentEvents(response.request)
            try:
                async for data in response.extensions[EXTENSION].content.iter_any():
                    idle.last = idle.loop.time()
                    for chunk in events.feed(data):
                        content = reply.add(chunk)
                        if content:
                            idle.reading = False  # the consumer's time is not ours
                            yield content
                            idle.reading = True
                    if events.done:
                        break
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            if not idle.expired:
                raise
            idle.task.uncancel()
            raise self._timeout() from None
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        except httpx2.TimeoutException:
            raise self._timeout() from None
        except (httpx2.TransportError, aiohttp.ClientError) as exc:
            raise self._fail(
                "The connection to the LLM endpoint broke in the middle of a reply.",
                _connection_reason(exc),
            ) from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._fail(
                "The LLM endpoint sent a malformed streaming reply.",
                type(exc).__name__,
                f"Check that {URL_SETTING} points to an OpenAI-compatible /v1 API.",
            ) from None
        finally:
            idle.close()

        if reply.finish is None:
            raise self._fail(
                "The LLM endpoint closed the stream before finishing the reply (no "
                "finish_reason); the conversation may be too long for the model's context.",
                hint="llama.cpp does this when the prompt overflows its context: raise its "
                "--ctx-size or shorten the conversation.",
            )
        if reply.finish == "length" and reply.calls:
            raise self._fail(
                "The model reached its token limit in the middle of a tool call "
                "(finish_reason: length); shorten the conversation.",
                hint="Raise the LLM server's max tokens or context size.",
            )
        yield ModelReply(text="".join(reply.text), tool_calls=self._tool_calls(reply.calls))

    def _tool_calls(self, calls: dict[int, dict[str, str]]) -> list[ToolCallRequest]:
        result = []
        for index in sorted(calls):
            call = calls[index]
            if not call["name"]:
                raise self._fail(
                    "The model sent a tool call without a name.",
                    hint=f"Check that MYAGENT_MODEL / --model ({self.model_id}) supports "
                    "tool calling.",
                )
            result.append(
                ToolCallRequest(call["id"] or new_call_id(), call["name"], call["arguments"])
            )
        return result

    def _fail(self, message: str, said: str = "", hint: str = f"Check {URL_SETTING}.") -> LLMError:
        """An LLMError whose message any client may see; the endpoint, what it said and
        the setting to check are its detail, for the server log."""
        said = f": {said.rstrip('.')}" if said else ""
        return LLMError(message, f"(LLM endpoint {self.endpoint}{said}.) {hint}")

    def _timeout(self) -> LLMError:
        return self._fail(
            f"The LLM endpoint did not answer within {self.timeout:g} s.",
            hint=f"Check that it is running and not overloaded ({URL_SETTING}).",
        )

    def _error(self, exc: openai.OpenAIError) -> LLMError:
        """A sentence a person can act on for each way the endpoint can fail."""
        if isinstance(exc, openai.APITimeoutError):
            return self._timeout()
        if isinstance(exc, openai.APIConnectionError):
            return self._fail("Could not reach the LLM endpoint.", _connection_reason(exc))
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APIError):
            return self._fail("The LLM endpoint reported an error.", _one_line(exc.message))
        return self._fail("The LLM client failed.", _one_line(str(exc)))

    def _status_error(self, exc: openai.APIStatusError) -> LLMError:
        status, said, model = exc.status_code, _upstream_said(exc), self.model_id
        if status == 401:
            message, hint = "The LLM endpoint rejected the API key (401).", "Check OPENAI_API_KEY."
        elif status == 403:
            message = "The LLM endpoint refused access (403)."
            hint = f"Check that OPENAI_API_KEY may use the model {model!r}."
        elif status == 404:
            message = f"The LLM endpoint has no model {model!r} or no chat completions API (404)."
            hint = f"Check MYAGENT_MODEL / --model and {URL_SETTING}."
        elif status == 429:
            message = "The LLM endpoint is rate limiting requests (429); try again in a moment."
            hint = "Check the quota of the key in OPENAI_API_KEY."
        elif status >= 500:
            message = f"The LLM endpoint failed with a server error ({status}); try again later."
            hint = f"Check the server behind {URL_SETTING}."
        else:
            message = f"The LLM endpoint rejected the request ({status})."
            hint = f"Check MYAGENT_MODEL / --model ({model}) and {URL_SETTING}."
        return self._fail(message, said, hint)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


class _Reply:
    """What the chunks of one streamed reply add up to: its text, its tool calls by index
    (ids and names in the first delta of each, arguments spread over several), and its
    finish reason. Only choice 0 counts."""

    __slots__ = ("calls", "finish", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None

    def add(self, chunk: dict[str, Any]) -> str | None:
        """Fold in one chunk; its text delta, if it has one."""
        content = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0):
                continue
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta")
            if not delta:
                continue
            for part in delta.get("tool_calls") or ():
                self._merge_call(part)
            content = delta.get("content")
            if content:
                self.text.append(content)
        return content or None

    def _merge_call(self, part: dict[str, Any]) -> None:
        call = self.calls.setdefault(
            part.get("index") or 0, {"id": "", "name": "", "arguments": ""}
        )
        if part.get("id") and not call["id"]:
            call["id"] = part["id"]
        function = part.get("function")
        if function:
            if function.get("name") and not call["name"]:
                call["name"] = function["name"]
            if function.get("arguments"):
                call["arguments"] += function["arguments"]


class _Idle:
    """The LLM timeout: a reply that sends nothing for `timeout` seconds while we wait for
    it is cancelled (time the consumer of the stream spends does not count). One timer per
    request, re-armed only when it fires (a chunk just records the time), where the HTTP
    client's read timeout re-armed a timer per chunk."""

    __slots__ = ("expired", "handle", "last", "loop", "reading", "task", "timeout")

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.timeout = timeout
        self.last = self.loop.time()
        self.reading = True  # False while the stream waits on its consumer
        self.expired = False
        self.handle = self.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if not self.reading:
            self.last = now
        remaining = self.last + self.timeout - now
        if remaining > 0:
            self.handle = self.loop.call_later(remaining, self._check)
        elif self.task is not None:
            self.expired = True
            self.task.cancel()

    def close(self) -> None:
        self.handle.cancel()


class _ServerSentEvents:
    """The JSON objects of an SSE stream's `data:` lines, fed bytes as they arrive; `done`
    after `[DONE]`. Synchronous, so a chunk costs no extra generator hop. An `error`
    object in the stream (some servers report failures that way) is an APIError."""

    __slots__ = ("done", "pending", "request")

    def __init__(self, request: httpx2.Request) -> None:
        self.pending = b""
        self.done = False
        self.request = request

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        lines = (self.pending + data).split(b"\n") if self.pending else data.split(b"\n")
        self.pending = lines.pop()
        chunks = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event:/id: fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            if not payload:
                continue
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict):
                raise TypeError("a chunk is not a JSON object")
            if chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise openai.APIError(str(message or error), self.request, body=chunk)
            chunks.append(chunk)
        return chunks


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _upstream_said(exc: openai.APIStatusError) -> str:
    """The endpoint's own explanation, from its JSON error body if it sent one."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message.strip():
            return _one_line(message.rstrip("."))
    return ""


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, innermost last (bounded)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _refused(exc: BaseException) -> bool:
    return any(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        or "refused" in str(e).lower()
        for e in _causes(exc)
    )


def _connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words (walks the cause chain)."""
    if _refused(exc):
        return "connection refused"
    said = [str(e) for e in _causes(exc) if str(e)]
    return _one_line(said[-1].rstrip(".")) if said else "connection failed"


def model_from_env(
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 0,
) -> Model:
    """The model configured by arguments, else OPENAI_API_KEY / OPENAI_BASE_URL /
    MYAGENT_MODEL; with no key and no endpoint, the built-in offline model."""
    from .offline import OfflineModel

    name = model or os.environ.get("MYAGENT_MODEL") or DEFAULT_MODEL
    key = api_key or os.environ.get("OPENAI_API_KEY") or None
    url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    if name == "offline" or (key is None and url is None):
        return OfflineModel()
    return OpenAIModel(
        model=name, api_key=key, base_url=url, timeout=timeout, max_retries=max_retries
    )


__all__ = [
    "DEFAULT_MODEL",
    "Model",
    "ModelReply",
    "OpenAIModel",
    "ToolCallRequest",
    "model_from_env",
]
