"""AG-UI for the same agents (docs.ag-ui.com; the contract is docs/agui.md): its threads.

`POST /agui/{agent}` (agui_http) answers a RunAgentInput with an SSE stream, and a
WebSocket that chooses the subprotocol `ag-ui` (agui_socket) gets the same events, each
with our `seq`, so it can resume. Both start runs here: a thread is a session (its memory
is the session's), kept per principal; a run follows the session's replay buffer like any
connection (a `Tail`, paced like one), and agui_translate turns the session's events into
AG-UI events. A confirmation ends the run with the interrupt outcome while the turn
waits; the next run's `resume` answers it. Nothing here runs for myagent-ws connections.

This module is what the app imports, and it imports nothing from ag_ui or pydantic: those
(about 40 ms of model classes) load with the first AG-UI request or `ag-ui` socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .keys import SESSIONS, SETTINGS
from .outbound import Cursor, Paced, new_reader_id
from .protocol import MAX_ID_LENGTH, ProtocolError
from .session import Reader, Session
from .sessions import SessionManager

if TYPE_CHECKING:
    from ag_ui.core import RunAgentInput


RUNS_KEPT = 16  # runs a thread remembers, for WebSocket clients resuming into them
ANSWER_HINT = 'Answer it with payload {"approved": true or false, "feedback": "..."}.'


class Refused(Exception):
    """A run that does not start: RUN_ERROR with `code`, or HTTP `status` before a stream."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(slots=True)
class Run:
    id: str
    after: int  # the session's events after this seq are the run's, up to its end


class Thread:
    """One AG-UI thread: its session and its latest runs."""

    __slots__ = ("id", "runs", "session")

    def __init__(self, thread_id: str, session: Session) -> None:
        self.id = thread_id
        self.session = session
        self.runs: deque[Run] = deque(maxlen=RUNS_KEPT)

    def run_of(self, seq: int) -> Run | None:
        """The run event `seq` belongs to if any: the latest that began before it."""
        for run in reversed(self.runs):
            if run.after < seq:
                return run
        return None


class Tail(Paced):
    """A Reader that keeps its own place in each attached session's replay buffer; its
    owner takes the events, decoded, in order. Paced like a connection (outbound.Paced):
    a turn waits while it is half a buffer behind, in events or bytes, and it stops
    following (`lost`) after send_timeout_s. Each session is paced on its own: there is
    no connection-wide send buffer here."""

    pending = 0
    send_limit = math.inf
    _closing = False  # a Tail stops following through _drop(); a Socket also by closing

    def __init__(self, principal: str | None) -> None:
        self.id = new_reader_id("agui")
        self.principal = principal
        self._cursors: dict[Session, Cursor] = {}
        self._progress: asyncio.Event | None = None
        self._dropped = False
        self.wake = asyncio.Event()  # set when there may be something to take
        self.lost: str | None = None  # why it stopped following (too slow)

    def attach(self, session: Session, cursor: int) -> None:
        self._cursors[session] = Cursor(cursor, session.buffer.last_seq)
        self.wake.set()

    def notify(self, session: Session, frame: bytes) -> bool:
        cursor = self._cursors.get(session)
        if cursor is not None:
            cursor.owed += len(frame)
        self.wake.set()
        return self.behind(session)

    def sent(self, session: Session) -> int:
        cursor = self._cursors.get(session)
        return session.seq if cursor is None or self.lost else cursor.sent

    def acked(self, session: Session) -> int:
        return 0  # no acks here: nothing this reader may still replay is trimmed

    def follows(self, session: Session) -> bool:
        """Whether some of `session` is still to take (an ended one, until all is taken)."""
        return session in self._cursors

    def _drop(self, why: str) -> None:
        """Stop following (its owner ends the run, as for a client that left)."""
        self.lost = why
        self._dropped = True
        self.wake.set()
        if self._progress is not None:
            self._progress.set()

    def take(self) -> list[tuple[Session, int, dict[str, Any]]]:
        """Every event not yet taken, session by session, in seq order."""
        taken = []
        for session, cursor in self._cursors.items():
            buffer = session.buffer
            while cursor.sent < buffer.last_seq:
                frame = buffer.get(cursor.sent + 1)
                if frame is None:  # it left the buffer (a resume from too far back)
                    cursor.sent = buffer.first_seq - 1
                    continue
                cursor.sent += 1
                if cursor.sent > cursor.live_from:
                    cursor.owed -= len(frame)
                taken.append((session, cursor.sent, orjson.loads(frame)))
        ended = [s for s, c in self._cursors.items() if s.closed and c.sent >= s.buffer.last_seq]
        for session in ended:
            del self._cursors[session]  # ended, and all of it taken
        if self._progress is not None:
            self._progress.set()
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

    async def _thread(self, key: tuple[str | None, str, str], reader: Reader) -> Thread | None:
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
            self._forget(key)
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
                self._forget(old)
        self.threads[key] = thread
        self.by_session[thread.session.id] = thread
        return thread

    def forget_ended(self) -> None:
        """Drop the threads whose session ended (expired, ended, reloaded): each would
        hold its session's replay buffer."""
        for key in [k for k, t in self.threads.items() if t.session.closed]:
            self._forget(key)

    def _forget(self, key: tuple[str | None, str, str]) -> None:
        self.by_session.pop(self.threads.pop(key).session.id, None)

    async def forgetting(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.forget_ended()

    async def start(
        self, principal: str | None, agent: str, data: RunAgentInput, reader: Reader
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

    def _begin(self, thread: Thread, run_id: str, reader: Reader) -> Run:
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
    return validate_input(raw)


def validate_input(raw: Any) -> RunAgentInput:
    """A RunAgentInput from parsed JSON, or Refused (422) saying what is wrong."""
    from ag_ui.core import RunAgentInput
    from pydantic import ValidationError

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


# -- the routes ------------------------------------------------------------------------------

AGUI = web.AppKey("agui", Adapter)


def add_routes(app: web.Application) -> None:
    """POST /agui/{agent} (and its CORS preflight), and the threads it keeps. The handlers
    are agui_http's, imported by the first request that needs them."""
    app[AGUI] = Adapter(app[SESSIONS], app[SETTINGS].max_sessions)
    app.router.add_post("/agui/{agent}", _post_run)
    app.router.add_route("OPTIONS", "/agui/{agent}", _preflight)
    app.cleanup_ctx.append(_forgetting)


async def _post_run(request: web.Request) -> web.StreamResponse:
    from .agui_http import post_run  # with ag_ui: a server no AG-UI client uses never loads it

    return await post_run(request)


async def _preflight(request: web.Request) -> web.Response:
    from .agui_http import preflight

    return await preflight(request)


async def _forgetting(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[AGUI].forgetting(app[SETTINGS].reap_interval_s))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
