"""A fake OpenAI-compatible LLM server for benchmarks: streams a get_weather tool call, then
(after the tool result) an answer whose tokens carry their send time.

    .venv/bin/python bench/fake_llm.py --port 0 --mode realistic --ttft-ms 300 --tokens-per-s 30

A real LLM costs money, varies run to run and hides the server's own overhead; this one
answers the same way every time, either instantly (measures our routing cost) or at a
realistic pace (measures how many slow streams we can hold). Each answer token is
`t##########` (microseconds since the epoch, mod 1e10, taken just before the write), so a
client can tell how long the token spent inside the server being measured.

Prints `READY <port>` once listening; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import time
from typing import Any

import orjson
from aiohttp import web
from serving import run, serve_until_signal

ARGUMENT_PARTS = ('{"city": ', '"Beijing"}')
YIELD_EVERY = 50  # instant mode: let other streams run this often

OPTIONS = web.AppKey("options", argparse.Namespace)
_reply_ids = itertools.count(1)
_call_ids = itertools.count(1)


class Clock:
    """Wakes every stream due in the same millisecond with one timer: 200 streams at 30
    tokens/s would otherwise arm 6,000 timers a second in this process, which shares a
    CPU with the load client and so adds to the latency being measured."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ticks: dict[int, list[asyncio.Future[None]]] = {}

    def until(self, when: float) -> asyncio.Future[None]:
        """A future of its own (a shared one would be cancelled with any one waiter)
        that completes at the first millisecond tick at or after `when`."""
        tick = math.ceil(when * 1000)
        waiters = self.ticks.get(tick)
        if waiters is None:
            waiters = self.ticks[tick] = []
            self.loop.call_at(tick / 1000, self._fire, tick)
        future = self.loop.create_future()
        waiters.append(future)
        return future

    def _fire(self, tick: int) -> None:
        for future in self.ticks.pop(tick, ()):
            if not future.done():
                future.set_result(None)


CLOCK = web.AppKey("clock", Clock)


class Pacer:
    """Sends chunks on an absolute schedule (ttft, then one per 1/tps) so delays never drift;
    in instant mode it only yields now and then so one stream cannot starve the rest."""

    def __init__(self, clock: Clock | None, ttft_s: float, tokens_per_s: float) -> None:
        self.clock = clock
        self.interval = 1.0 / tokens_per_s
        self.index = 0
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time() + ttft_s

    async def wait(self) -> None:
        index = self.index
        self.index += 1
        if self.clock is not None:
            due = self.start + index * self.interval
            if due > self.loop.time():
                await self.clock.until(due)
        elif index and index % YIELD_EVERY == 0:
            await asyncio.sleep(0)


def chunk(reply_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One SSE event holding a full chat.completion.chunk, as real servers send them."""
    body = {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def send_tool_call(resp: web.StreamResponse, pacer: Pacer, reply_id: str, model: str) -> None:
    call_id = f"call_{next(_call_ids)}"
    first = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"tool_calls": [first]}, None),
    ]
    for part in ARGUMENT_PARTS:
        deltas.append(({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, None))
    deltas.append(({}, "tool_calls"))
    for delta, finish in deltas:
        await pacer.wait()
        await resp.write(chunk(reply_id, model, delta, finish))


async def send_answer(
    resp: web.StreamResponse, pacer: Pacer, reply_id: str, model: str, tokens: int
) -> None:
    await pacer.wait()
    await resp.write(chunk(reply_id, model, {"role": "assistant", "content": ""}))
    # Every token chunk is the same bytes around the token: built once per reply.
    prefix, suffix = chunk(reply_id, model, {"content": "\x00"}).split(b"\\u0000")
    for _ in range(tokens):
        await pacer.wait()
        token = b"t%010d " % (time.time_ns() // 1000 % 10**10)
        await resp.write(prefix + token + suffix)
    await pacer.wait()
    await resp.write(chunk(reply_id, model, {}, "stop"))


async def completions(request: web.Request) -> web.StreamResponse:
    options = request.app[OPTIONS]
    body = orjson.loads(await request.read())
    model = body.get("model") or "fake"
    messages = body.get("messages") or [{}]
    reply_id = f"chatcmpl-{next(_reply_ids)}"
    clock = request.app[CLOCK] if options.mode == "realistic" else None
    pacer = Pacer(clock, options.ttft_ms / 1000, options.tokens_per_s)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    try:
        await resp.prepare(request)
        if messages[-1].get("role") == "tool":
            await send_answer(resp, pacer, reply_id, model, options.answer_tokens)
        else:
            await send_tool_call(resp, pacer, reply_id, model)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError is a subclass
        pass  # the client went away mid-stream: nothing to finish
    return resp


async def serve(options: argparse.Namespace) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[OPTIONS] = options
    app[CLOCK] = Clock()
    app.router.add_post("/v1/chat/completions", completions)
    await serve_until_signal(app, options.host, options.port, shutdown_timeout=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--mode", choices=["instant", "realistic"], required=True)
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="realistic: first chunk")
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="realistic: pace")
    parser.add_argument("--answer-tokens", type=int, default=200)
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop")
    options = parser.parse_args()
    if options.tokens_per_s <= 0 or options.answer_tokens < 0 or options.ttft_ms < 0:
        parser.error("--tokens-per-s must be > 0; --answer-tokens and --ttft-ms >= 0")
    run(serve(options), options.uvloop)


if __name__ == "__main__":
    main()
