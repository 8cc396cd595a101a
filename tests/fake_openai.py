"""A local stand-in for an OpenAI-compatible endpoint: `POST /v1/chat/completions` with
`stream: true`, answering from a script, on 127.0.0.1. Self-contained so any test module
(or conftest) can import the `fake_openai` fixture.

    fake_openai.script += [tool_calls(("call_1", "get_weather", '{"city": "Paris"}')), "Sunny."]
    model = OpenAIModel(base_url=fake_openai.base_url, api_key="sk-test")
    ...
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "get_weather"
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
    """A text reply, streamed in several content chunks."""

    text: str
    pieces: int = 4


@dataclass
class ToolCalls:
    """One reply asking for tool calls: (id, name, arguments JSON) each. Ids and names go
    in the first delta of each call; arguments are split over several deltas, and the
    calls are interleaved by index."""

    calls: list[tuple[str, str, str]]
    text: str = ""
    pieces: int = 3


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


Reply = Text | ToolCalls | Status | Hang | Raw | str


def tool_calls(*calls: tuple[str, str, str], text: str = "") -> ToolCalls:
    return ToolCalls(list(calls), text=text)


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
        if isinstance(reply, Text | Hang):
            text = reply.text if isinstance(reply, Text) else reply.text_first
            for piece in split(text, getattr(reply, "pieces", 1)):
                yield _chunk(model, {"content": piece})
            if isinstance(reply, Text):
                yield _chunk(model, {}, finish="stop")
            return
        assert isinstance(reply, ToolCalls)
        if reply.text:
            yield _chunk(model, {"content": reply.text})
        for index, (call_id, name, _) in enumerate(reply.calls):
            first = {"index": index, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            yield _chunk(model, {"tool_calls": [first]})
        parts = [split(arguments, reply.pieces) for _, _, arguments in reply.calls]
        for round_ in range(max(len(p) for p in parts)):
            for index, pieces in enumerate(parts):
                if round_ < len(pieces):
                    delta = {"index": index, "function": {"arguments": pieces[round_]}}
                    yield _chunk(model, {"tool_calls": [delta]})
        yield _chunk(model, {}, finish="tool_calls")


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
