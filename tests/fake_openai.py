"""A local stand-in for an OpenAI-compatible endpoint: `POST /v1/chat/completions` with
`stream: true`, answering from a script, on 127.0.0.1. Self-contained so any test module
(or conftest) can import the `fake_openai` fixture.

    fake_openai.script += [tool_calls(("call_1", "get_weather", '{"city": "Paris"}')), "Sunny."]
    model = OpenAIModel(base_url=fake_openai.base_url, api_key="sk-test")
    ...
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "get_weather"

Replies: Text, ToolCalls, Status, Hang, Raw, and Truncated (a stream that ends with no
finish_reason, as llama.cpp's does when a request overflows its context).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Text:
    """A text reply, streamed in several content chunks; the last chunk carries `finish`
    ("length": the model hit its token limit, so the text is cut short)."""

    text: str
    pieces: int = 4
    finish: str = "stop"


@dataclass
class ToolCalls:
    """One reply asking for tool calls: (id, name, arguments JSON) each. Ids and names go
    in the first delta of each call; arguments are split over several deltas, and the
    calls are interleaved by index. `finish="length"` (with arguments cut short) is the
    model hitting its token limit in the middle of a call."""

    calls: list[tuple[str, str, str]]
    text: str = ""
    pieces: int = 3
    finish: str = "tool_calls"


@dataclass
class Status:
    """An HTTP error with an OpenAI-style JSON error body."""

    status: int
    message: str = "Fake error."


@dataclass
class Hang:
    """Stream `text_first` (if any), then send nothing until the test ends."""

    text_first: str = ""


@dataclass
class Raw:
    """Send these SSE `data:` payloads as they are (for malformed-stream tests)."""

    payloads: list[str] = field(default_factory=list)


@dataclass
class Truncated:
    """llama.cpp on context overflow: HTTP 200, some chunks, then the stream closes with no
    finish_reason (and no [DONE]). The role chunk, then `text` and `tool_calls` (id, name,
    arguments so far) streamed like Text and ToolCalls, then the response just ends.
    `done=True` sends `data: [DONE]` before ending, still with no finish_reason (some
    servers do that)."""

    text: str = ""
    tool_calls: list[tuple[str, str, str]] | None = None
    done: bool = False
    pieces: int = 3


Reply = Text | ToolCalls | Status | Hang | Raw | Truncated | str


def tool_calls(
    *calls: tuple[str, str, str], text: str = "", finish: str = "tool_calls"
) -> ToolCalls:
    return ToolCalls(list(calls), text=text, finish=finish)


def split(text: str, pieces: int) -> list[str]:
    """`text` cut into up to `pieces` non-empty parts that join back to it."""
    pieces = max(1, min(pieces, len(text)))
    n = len(text)
    return [text[n * i // pieces : n * (i + 1) // pieces] for i in range(pieces)] or [""]


class FakeOpenAI:
    """Fill `.script` with replies (a str is a Text reply); read `.requests` afterwards."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.base_url = ""
        self._released = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        return app

    def release(self) -> None:
        """Let hanging replies finish (called at teardown)."""
        self._released.set()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not self.script:
            return _error(500, "fake_openai: the test script has no reply left.")
        reply = self.script.pop(0)
        if isinstance(reply, str):
            reply = Text(reply)
        if isinstance(reply, Status):
            return _error(reply.status, reply.message)
        if isinstance(reply, Hang) and not reply.text_first:
            await self._hang()
            return _error(500, "fake_openai: released.")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            async for payload in self._payloads(reply, body.get("model", "fake")):
                await response.write(f"data: {payload}\n\n".encode())
                await asyncio.sleep(0)
            if isinstance(reply, Hang):
                await self._hang()
            if not isinstance(reply, Truncated) or reply.done:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up (timeout tests): nothing left to send
        return response

    async def _hang(self) -> None:
        try:
            await asyncio.wait_for(self._released.wait(), 30)
        except TimeoutError:
            pass

    async def _payloads(self, reply: Reply, model: str) -> AsyncIterator[str]:
        if isinstance(reply, Raw):
            for payload in reply.payloads:
                yield payload
            return
        yield _chunk(model, {"role": "assistant", "content": ""})
        if isinstance(reply, Hang):
            if reply.text_first:
                yield _chunk(model, {"content": reply.text_first})
            return
        if isinstance(reply, Text):
            for piece in split(reply.text, reply.pieces):
                yield _chunk(model, {"content": piece})
            yield _chunk(model, {}, finish=reply.finish)
            return
        if isinstance(reply, Truncated):
            for piece in split(reply.text, reply.pieces) if reply.text else ():
                yield _chunk(model, {"content": piece})
            for payload in _tool_call_chunks(model, reply.tool_calls or [], reply.pieces):
                yield payload
            return  # no finish chunk: the server just stops
        assert isinstance(reply, ToolCalls)
        if reply.text:
            yield _chunk(model, {"content": reply.text})
        for payload in _tool_call_chunks(model, reply.calls, reply.pieces):
            yield payload
        yield _chunk(model, {}, finish=reply.finish)


def _tool_call_chunks(model: str, calls: list[tuple[str, str, str]], pieces: int) -> list[str]:
    """Tool-call deltas: id and name first for each call, then the arguments split over
    several deltas, interleaved by index."""
    chunks = []
    for index, (call_id, name, _) in enumerate(calls):
        first = {"index": index, "id": call_id, "type": "function"}
        first["function"] = {"name": name, "arguments": ""}
        chunks.append(_chunk(model, {"tool_calls": [first]}))
    parts = [split(arguments, pieces) for _, _, arguments in calls]
    for round_ in range(max((len(p) for p in parts), default=0)):
        for index, call_parts in enumerate(parts):
            if round_ < len(call_parts):
                delta = {"index": index, "function": {"arguments": call_parts[round_]}}
                chunks.append(_chunk(model, {"tool_calls": [delta]}))
    return chunks


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
        ensure_ascii=False,
    )


def _error(status: int, message: str) -> web.Response:
    kind = {401: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status=status
    )


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> AsyncIterator[FakeOpenAI]:
    """A running fake endpoint; `.base_url` is "http://127.0.0.1:PORT/v1"."""
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app())
    fake.base_url = f"http://127.0.0.1:{server.port}/v1"
    yield fake
    fake.release()
