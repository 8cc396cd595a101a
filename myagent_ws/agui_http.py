"""POST /agui/{agent}: one AG-UI run as an SSE stream (docs/agui.md).

Apart from agui.py because it is the HTTP half: it imports ag_ui (the event models and
EventEncoder), so agui.add_routes imports it with the first request, and a server that no
AG-UI client uses never pays for those models. The request goes through the same gate as
a WebSocket; the stream ends with exactly one RUN_FINISHED or RUN_ERROR whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ag_ui.core import BaseEvent, RunAgentInput
from ag_ui.encoder import EventEncoder
from aiohttp import web

from .agui import AGUI, Adapter, Refused, Run, Tail, Thread, parse_input
from .agui_translate import Translator, nothing_to_run, run_refused
from .gate import refusal
from .keys import GATE

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a waiting SSE stream checks that its client is still there
START_FAILED = "The server failed to start this run; try again. The server log has the details."


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight, for allowed origins only (like /auth/ticket)."""
    return request.app[GATE].preflight(request, "This origin may not run agents here.")


async def post_run(request: web.Request) -> web.StreamResponse:
    """POST /agui/{agent}: one run as an SSE stream, through the same gate as a WebSocket."""
    gate = request.app[GATE]
    cors = gate.cors(request)
    admission = await gate.admit(request)
    if isinstance(admission, web.Response):
        if admission.status != 403:
            admission.headers.update(cors)
        return admission
    try:
        adapter = request.app[AGUI]
        try:
            agent = adapter.agent(request.match_info["agent"])
            data = parse_input(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return refusal(
                413,
                "message_too_large",
                f"The body is over this server's limit of {request.client_max_size} bytes.",
                **cors,
            )
        except Refused as exc:
            return refusal(exc.status, exc.code, exc.message, **cors)
        encoder = EventEncoder()
        response = web.StreamResponse(
            headers={
                "Content-Type": encoder.get_content_type(),
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **cors,
            }
        )
        await response.prepare(request)

        async def write(events: list[BaseEvent]) -> None:
            if events:
                await response.write("".join(map(encoder.encode, events)).encode())

        def gone() -> bool:
            return request.transport is None or request.transport.is_closing()

        await _stream(adapter, admission.principal, agent, data, write, gone)
        return response
    finally:
        gate.release(admission)


async def _stream(
    adapter: Adapter,
    principal: str | None,
    agent: str,
    data: RunAgentInput,
    write: Callable[[list[BaseEvent]], Awaitable[None]],
    gone: Callable[[], bool],
) -> None:
    """Run `data` and write its events until it ends: with exactly one RUN_FINISHED or
    RUN_ERROR whatever happens (the client going away stops the turn, as AG-UI's abort)."""
    reader = Tail(principal)
    try:
        try:
            thread, run = await adapter.start(principal, agent, data, reader)
        except Refused as exc:
            await write(run_refused(data.thread_id, data.run_id, exc.code, exc.message))
            return
        except Exception:  # the store down, or a bug: the run still ends, in words
            log.exception("AG-UI run %s could not start", data.run_id)
            await write(run_refused(data.thread_id, data.run_id, "internal_error", START_FAILED))
            return
        if thread is None or run is None:
            await write(nothing_to_run(data.thread_id, data.run_id))
            return
        await _follow(thread, run, reader, write, gone)
    finally:
        adapter.sessions.detach(reader)


async def _follow(
    thread: Thread,
    run: Run,
    reader: Tail,
    write: Callable[[list[BaseEvent]], Awaitable[None]],
    gone: Callable[[], bool],
) -> None:
    translator = Translator(thread)
    session = thread.session
    try:
        while True:
            reader.wake.clear()
            events = [a for _, seq, event in reader.take() for a in translator.feed(seq, event)]
            if reader.lost:  # like a client that left: its turn stops
                await session.cancel("the AG-UI client was too slow.")
                events += translator.fail(run, "client_too_slow", f"Too slow: {reader.lost}.")
            elif session.closed and not reader.follows(session):  # all of it taken
                events += translator.fail(run, "session_ended", "The session ended.")
            await write(events)
            if translator.finished(run):
                return
            while not await _woken(reader.wake):
                if gone():
                    return
    except ConnectionError:
        pass  # the client went away: nothing more can reach it
    except Exception:
        log.exception("AG-UI run %s failed", run.id)
    finally:
        if not translator.finished(run):
            await session.cancel("the AG-UI run stopped before its end.")
            ended = translator.fail(run, "internal_error", "The run stopped on the server.")
            try:
                await write(ended)
            except Exception:
                pass  # the client is gone, or the server is going


async def _woken(event: asyncio.Event) -> bool:
    """Whether `event` was set within POLL_S."""
    try:
        await asyncio.wait_for(event.wait(), POLL_S)
    except TimeoutError:
        return False
    return True
