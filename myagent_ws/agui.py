"""AG-UI for the same agents (docs.ag-ui.com; the contract is docs/agui.md).

`POST /agui/{agent}` answers a RunAgentInput with an SSE stream, and a WebSocket that
chooses the subprotocol `ag-ui` gets the same events, each with our `seq`, so it can
resume. Events are the official ag-ui-protocol models, encoded by its EventEncoder.

A thread is a session (its memory is the session's), kept per principal. A run follows
the session's replay buffer like any connection (the Reader protocol) and `Translator`
turns the session's events into AG-UI events as a function of those events alone: ids
come from event ids, so a replayed stretch translates to exactly what was sent the first
time. A confirmation ends the run with the interrupt outcome while the turn waits; the
next run's `resume` answers it. Nothing here runs for myagent-ws connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from ag_ui.core import BaseEvent, RunAgentInput, RunErrorEvent, RunFinishedEvent
from ag_ui.core import RunFinishedSuccessOutcome as Success
from ag_ui.encoder import EventEncoder
from aiohttp import web
from pydantic import ValidationError

from .agui_translate import Run, Thread, Translator, run_started
from .gate import refusal
from .keys import GATE, SESSIONS, SETTINGS
from .protocol import MAX_ID_LENGTH, ProtocolError
from .session import Session
from .sessions import SessionManager

log = logging.getLogger(__name__)
_ids = itertools.count(1)

POLL_S = 0.5  # how often a waiting SSE stream checks that its client is still there
ANSWER_HINT = 'Answer it with payload {"approved": true or false, "feedback": "..."}.'


class Refused(Exception):
    """A run that does not start: RUN_ERROR with `code`, or HTTP `status` before a stream."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class Tail:
    """A Reader that keeps its own place in each attached session's replay buffer; its
    owner takes the events, decoded, in order. Paced like a connection: a turn waits
    while it is half a buffer behind, and stops waiting (`lost`) after send_timeout_s."""

    def __init__(self, principal: str | None) -> None:
        self.id = f"agui_{next(_ids)}"
        self.principal = principal
        self.cursors: dict[Session, int] = {}
        self.wake = asyncio.Event()  # set when there may be something to take
        self.progress = asyncio.Event()
        self.lost: str | None = None  # why it stopped following (too slow)

    def attach(self, session: Session, cursor: int) -> None:
        self.cursors[session] = cursor
        self.wake.set()

    def notify(self, session: Session, frame: bytes) -> bool:
        self.wake.set()
        return self.behind(session)

    def sent(self, session: Session) -> int:
        cursor = self.cursors.get(session)
        return session.seq if cursor is None or self.lost else cursor

    def behind(self, session: Session) -> bool:
        cursor = self.cursors.get(session)
        buffer = session.buffer
        return (
            not (cursor is None or self.lost) and buffer.last_seq - cursor > buffer.max_events // 2
        )

    async def catch_up(self, session: Session, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.behind(session):
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), deadline - loop.time())
            except TimeoutError:
                self.stop(f"it stayed behind for {timeout_s:g} s")

    def acked(self, session: Session) -> int:
        return 0  # no acks here: nothing this reader may still replay is trimmed

    def stop(self, why: str) -> None:
        self.lost = why
        self.wake.set()
        self.progress.set()

    def take(self) -> list[tuple[Session, int, dict[str, Any]]]:
        """Every event not yet taken, session by session, in seq order."""
        taken = []
        for session, cursor in self.cursors.items():
            buffer = session.buffer
            while cursor < buffer.last_seq:
                frame = buffer.get(cursor + 1)
                if frame is None:  # it left the buffer (a resume from too far back)
                    cursor = buffer.first_seq - 1
                    continue
                cursor += 1
                taken.append((session, cursor, orjson.loads(frame)))
            self.cursors[session] = cursor
        for ended in [s for s, c in self.cursors.items() if s.closed and c >= s.buffer.last_seq]:
            del self.cursors[ended]  # ended, and all of it taken
        self.progress.set()
        return taken


class Adapter:
    """Threads by (principal, agent, threadId), and starting runs on them."""

    def __init__(self, sessions: SessionManager, limit: int) -> None:
        self.sessions = sessions
        self.limit = limit
        self.threads: dict[tuple[str | None, str, str], Thread] = {}
        self.by_session: dict[str, Thread] = {}
        self.creating: set[tuple[str | None, str, str]] = set()  # first runs under way

    def agent(self, name: str | None) -> str:
        """The agent a run names (None: the server's default), or Refused (404)."""
        if name is not None and len(name) > MAX_ID_LENGTH:
            raise Refused("agent_not_found", "No agent has a name that long.", 404)
        registry = self.sessions.registry
        try:
            return registry.resolve(name).name
        except ProtocolError as exc:
            if exc.code == "agent_required":  # the WebSocket binding's runs name none
                names = ", ".join(registry.names())
                exc.message = (
                    f"This server has several agents; name one in forwardedProps.agent: {names}."
                )
            raise Refused(exc.code, exc.message, 404) from None

    async def _thread(self, key: tuple[str | None, str, str], reader: Any) -> Thread | None:
        """The thread, with its session as this process holds it now (None: start afresh).
        With the Redis store a session nothing follows leaves the process after a run
        (detach releases it): it is loaded again, memory and all, and `reader` attached."""
        thread = self.threads.get(key)
        if thread is None:
            return None
        session = thread.session
        live = self._live(thread)
        if live is None and not session.closed:
            try:  # replays nothing: the thread's runs have had all of it
                live = await self.sessions.reconnect(session.id, reader, session.seq)
            except ProtocolError:
                live = None  # gone from the store too: expired
        if live is None or live.closed:  # expired or ended: start afresh
            del self.threads[key]
            self.by_session.pop(session.id, None)
            return None
        thread.session = live
        return thread

    def _live(self, thread: Thread) -> Session | None:
        """The thread's session if this process holds it (open or not)."""
        session = self.sessions.sessions.get(thread.session.id)
        return session if session is thread.session else None

    def _remember(self, key: tuple[str | None, str, str], thread: Thread) -> Thread:
        if len(self.threads) >= self.limit:
            self.forget_ended()
            # With the Redis store, threads whose session left the process, oldest first.
            elsewhere = [k for k, t in self.threads.items() if self._live(t) is None]
            for old in elsewhere[: len(self.threads) - self.limit + 1]:
                self.by_session.pop(self.threads.pop(old).session.id, None)
        self.threads[key] = thread
        self.by_session[thread.session.id] = thread
        return thread

    def forget_ended(self) -> None:
        """Drop the threads whose session ended (expired, ended, reloaded): each would
        hold its session's replay buffer."""
        for key in [k for k, t in self.threads.items() if t.session.closed]:
            self.by_session.pop(self.threads.pop(key).session.id, None)

    async def forgetting(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.forget_ended()

    async def start(
        self, principal: str | None, agent: str, data: RunAgentInput, reader: Any
    ) -> tuple[Thread | None, Run | None]:
        """Start the run `data` asks for, `reader` following it; no Run when there is
        nothing to run (its resume only cancelled interrupts already closed)."""
        key = (principal, agent, data.thread_id)
        thread = await self._thread(key, reader)
        answers = {entry.interrupt_id: entry for entry in data.resume or ()}
        pending = thread.session.pending if thread is not None else None
        entry = answers.pop(pending.step_id, None) if pending is not None else None
        if pending is not None and entry is None:
            raise Refused(
                "resume_required",
                f"This thread waits for an answer to interrupt {pending.step_id!r}; send it "
                f"in resume. {ANSWER_HINT}",
            )
        for stale in answers.values():
            if stale.status == "resolved":
                raise Refused(
                    "confirm_not_pending",
                    f"Interrupt {stale.interrupt_id[:MAX_ID_LENGTH]!r} is not open: it was "
                    "answered, timed out, or its run ended. Run again without it.",
                )
        try:
            if thread is not None and pending is not None:
                approved, feedback = _answer(entry)
                run = self._begin(thread, data.run_id, reader)
                await self._undo_if_fails(
                    thread, run, thread.session.respond(pending.step_id, approved, feedback)
                )
                return thread, run
            if data.resume:
                return thread, None
            text = _user_text(data)
            if thread is None:
                if key in self.creating:  # two first runs at once: one thread, one session
                    raise Refused("session_busy", "This thread's first run is starting.")
                self.creating.add(key)
                try:
                    session = await self.sessions.create(agent, reader)
                finally:
                    self.creating.discard(key)
                thread = self._remember(key, Thread(data.thread_id, session))
            elif thread.session.busy:
                raise thread.session.busy_error()
            run = self._begin(thread, data.run_id, reader)
            await self._undo_if_fails(thread, run, thread.session.start_turn(text))
            return thread, run
        except ProtocolError as exc:
            raise Refused(exc.code, exc.message) from None

    def _begin(self, thread: Thread, run_id: str, reader: Any) -> Run:
        session = thread.session
        run = Run(run_id, session.seq)
        thread.runs.append(run)
        if reader not in session.connections:
            self.sessions.follow(session, reader, session.seq)
        session.last_active = time.monotonic()
        return run

    @staticmethod
    async def _undo_if_fails(thread: Thread, run: Run, step: Awaitable[Any]) -> None:
        try:
            await step
        except BaseException:
            thread.runs.remove(run)
            raise


def _answer(entry: Any) -> tuple[bool, str | None]:
    """(approved, feedback) from a resume entry, or Refused."""
    if entry.status == "cancelled":
        return False, "The user cancelled this call."
    payload = entry.payload
    if isinstance(payload, dict) and "editedArgs" in payload:
        raise Refused(
            "invalid_resume", "Edited arguments are not supported: approve or reject the call."
        )
    approved = (
        payload.get("approved", payload.get("confirmed")) if isinstance(payload, dict) else payload
    )
    feedback = payload.get("feedback") if isinstance(payload, dict) else None
    if type(approved) is not bool or not isinstance(feedback, str | None):
        raise Refused("invalid_resume", f"Interrupt {entry.interrupt_id!r}: {ANSWER_HINT}")
    return approved, feedback


def _user_text(data: RunAgentInput) -> str:
    """The text of the last message, a user's: the thread remembers the ones before."""
    last = data.messages[-1] if data.messages else None
    content = getattr(last, "content", None) if getattr(last, "role", None) == "user" else None
    if isinstance(content, list):
        content = "".join(getattr(part, "text", "") for part in content)
    if not content or not content.strip():
        raise Refused(
            "no_user_message", "The last message must be the user's, with text: it is what runs."
        )
    return content


def parse_input(data: str | bytes) -> RunAgentInput:
    """A RunAgentInput from JSON, or Refused (400, 422) saying what to fix."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(
            "invalid_json", "The body is not valid JSON; send a RunAgentInput.", 400
        ) from None
    try:
        parsed = RunAgentInput.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "/".join(str(p) for p in error["loc"])[:100] or "the top level"
        raise Refused(
            "invalid_input", f"Invalid RunAgentInput at {where}: {error['msg'][:200]}.", 422
        ) from None
    if max(len(parsed.thread_id), len(parsed.run_id)) > MAX_ID_LENGTH:
        raise Refused(
            "invalid_input", f"threadId and runId may be {MAX_ID_LENGTH} characters at most.", 422
        )
    return parsed


# -- POST /agui/{agent} ----------------------------------------------------------------------

AGUI = web.AppKey("agui", Adapter)


def add_routes(app: web.Application) -> None:
    """POST /agui/{agent} (and its CORS preflight), and the threads it keeps."""
    app[AGUI] = Adapter(app[SESSIONS], app[SETTINGS].max_sessions)
    app.router.add_post("/agui/{agent}", post_run)
    app.router.add_route("OPTIONS", "/agui/{agent}", preflight)
    app.cleanup_ctx.append(_forgetting)


async def _forgetting(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[AGUI].forgetting(app[SETTINGS].reap_interval_s))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight, for allowed origins only (like /auth/ticket)."""
    gate = request.app[GATE]
    if request.headers.get("Origin") is None or not gate.origin_allowed(request):
        return refusal(403, "forbidden_origin", "This origin may not run agents here.")
    return web.Response(
        status=204,
        headers={
            **gate.cors(request),
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        },
    )


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
            await write(
                [
                    run_started(data.thread_id, data.run_id),
                    RunErrorEvent(message=exc.message, code=exc.code),
                ]
            )
            return
        except Exception:  # the store down, or a bug: the run still ends, in words
            log.exception("AG-UI run %s could not start", data.run_id)
            text = "The server failed to start this run; try again. The server log has the details."
            await write(
                [
                    run_started(data.thread_id, data.run_id),
                    RunErrorEvent(message=text, code="internal_error"),
                ]
            )
            return
        if thread is None or run is None:
            await write([run_started(data.thread_id, data.run_id), nothing_to_run(data)])
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
            elif session.closed and session not in reader.cursors:  # all of it taken
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


def nothing_to_run(data: RunAgentInput) -> RunFinishedEvent:
    """A resume that only cancelled closed interrupts: the run has nothing to do."""
    return RunFinishedEvent(thread_id=data.thread_id, run_id=data.run_id, outcome=Success())
