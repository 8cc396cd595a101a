"""One turn: drive an agent, turn its steps into agent.* events, and end with exactly one
terminal event (final_answer, error, timeout or interrupted).

The runner gets an agent, an `emit` function and a `pace` function, never a session or a
socket; when a connection falls behind, the turn awaits `pace` (bounded) instead of
outrunning it. A `Turn`
owns its task and its deadline, and its terminal event is decided by whoever comes first:
the agent finishing, the deadline, `cancel()`, or `fail()`. Cancel and timeout do not wait
for the agent to notice: the terminal event goes out at once, the task is cancelled, and
whatever the agent yields afterwards is dropped. So a tool that ignores cancellation can
delay nothing but the next turn of its own session, which waits for it to let go of the
agent's memory (bounded by that turn's own deadline).

A tool call that needs approval (the agent yields a ConfirmRequest) makes the turn send
agent.user_confirm and wait, holding the question in `Turn.pending` so a reconnecting
client can be asked again; the first matching answer wins and takes it away, so no call
runs twice whatever arrives. With a shared store, `Questions` puts the question where
every server process can answer it (and takes it back on a timeout), and a turn that
another process ended (a cancel there, or this process counted as lost) is `abandon`ed:
it stops without a terminal event of its own, since one was already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from myagent.errors import AgentError
from myagent.events import (
    ConfirmRequest,
    FinalAnswer,
    TextDelta,
    Thinking,
    ToolCall,
    ToolFinished,
)

from .protocol import make_event

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

# A model that streams without ever suspending would starve the connection writers until
# its turn ended; the turn lets them run after this many steps.
STEPS_PER_YIELD = 32
# How much of a turn's message its first agent.thinking repeats (metadata.user_message).
MAX_ECHO_CHARS = 4000

# Emits one event; True when a connection fell behind and the turn should await `Pace`.
Emit = Callable[[dict[str, Any]], bool]
Pace = Callable[[], Awaitable[None]]
# Runs once the terminal event is out, with that event.
OnEnd = Callable[[dict[str, Any]], None]


class Questions(Protocol):
    """Where a question lives while it waits, when other processes may answer it."""

    async def ask(self, pending: PendingConfirm) -> None: ...

    async def withdraw(self, step_id: str) -> bool:
        """Take the question back on a timeout; False if an answer took it first."""
        ...


def step_event(step: Any, reveal_detail: bool = False) -> dict[str, Any]:
    """The protocol event for one agent step event. A failed tool's exception text goes
    on the wire only with `reveal_detail` (the server's --debug)."""
    match step:
        case TextDelta():
            return make_event(
                "agent.partial_answer",
                content=step.text,
                metadata={"is_final": False, "step": step.step},
            )
        case Thinking():
            return make_event(
                "agent.thinking",
                content=f"Thinking (step {step.step})…",
                metadata={"step": step.step},
            )
        case ToolCall():
            return make_event(
                "agent.tool_call",
                step_id=step.call_id,
                content=f"Calling tool: {step.tool}",
                metadata={
                    "tool": step.tool,
                    "args": step.args,
                    "call_id": step.call_id,
                    "step": step.step,
                },
            )
        case ToolFinished():
            metadata = {
                "tool": step.tool,
                "status": step.status,
                "duration_ms": round(step.duration_ms, 3),
                "call_id": step.call_id,
            }
            if step.reason is not None:
                metadata["reason"] = step.reason
            return make_event(
                "agent.tool_result",
                step_id=step.call_id,
                content=step.output if reveal_detail else step.shown,
                metadata=metadata,
            )
    raise TypeError(f"unknown agent step event {step!r}")


def error_event(code: str, message: str) -> dict[str, Any]:
    return make_event("agent.error", content=message, metadata={"code": code})


def interrupted_event(content: str = "The turn was cancelled.", **metadata: Any) -> dict[str, Any]:
    metadata = {key: value for key, value in metadata.items() if value is not None}
    return make_event("agent.interrupted", content=content, metadata=metadata or None)


# How long a timed-out question waits for an answer another process already took.
ANSWER_IN_FLIGHT_S = 5.0
# How much of a call's arguments the question shows (all of them are in metadata.args).
QUESTION_ARGS_CHARS = 300


class PendingConfirm:
    """A tool call waiting for user.response: the question (sent again after a
    reconnect) and the future its one answer goes to."""

    __slots__ = ("answer", "content", "metadata", "step_id")

    def __init__(self, request: ConfirmRequest, timeout_s: float, answer: asyncio.Future) -> None:
        self.step_id = request.call_id
        self.answer: asyncio.Future[tuple[bool, str | None]] = answer
        shown = ", ".join(
            f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in request.args.items()
        )
        if len(shown) > QUESTION_ARGS_CHARS:
            shown = shown[:QUESTION_ARGS_CHARS] + "…"
        self.content = f"The agent wants to run {request.tool}({shown}). Approve?"
        expires = datetime.fromtimestamp(time.time() + timeout_s, UTC)
        self.metadata = {
            "tool": request.tool,
            "args": request.args,
            "call_id": request.call_id,
            "expires_at": expires.isoformat(timespec="milliseconds"),
        }

    def event(self) -> dict[str, Any]:
        """A fresh agent.user_confirm (each send gets its own seq)."""
        return make_event(
            "agent.user_confirm",
            step_id=self.step_id,
            content=self.content,
            metadata=dict(self.metadata),
        )


class Turn:
    """One accepted user.message: its task, its deadline and its one terminal event."""

    __slots__ = (
        "_confirm_timeout_s",
        "_emit",
        "_metrics",
        "_on_end",
        "_pending_first",
        "_questions",
        "_started",
        "_timeout_s",
        "_timer",
        "open",
        "pending",
        "task",
    )

    def __init__(
        self,
        emit: Emit,
        metrics: Metrics,
        timeout_s: float,
        confirm_timeout_s: float = 300.0,
        on_end: OnEnd | None = None,
        questions: Questions | None = None,
    ) -> None:
        self._emit = emit
        self._metrics = metrics
        self._started = time.perf_counter()
        self._pending_first = True
        self._timeout_s = timeout_s
        self._confirm_timeout_s = confirm_timeout_s
        self._on_end = on_end
        self._questions = questions
        self.open = True
        self.pending: PendingConfirm | None = None
        self.task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._time_out)
        metrics.turn_started()

    def step(self, event: dict[str, Any]) -> bool:
        """Emit a step event, unless the turn has already ended; True if it should pace."""
        if not self.open:
            return False
        if self._pending_first:
            self._pending_first = False
            self._metrics.first_event(time.perf_counter() - self._started)
        return self._emit(event)

    def finish(self, terminal: dict[str, Any]) -> bool:
        """Emit the terminal event if none was yet; False if the turn had already ended."""
        if not self.open:
            return False
        self.step(terminal)
        self._close(terminal["event"].removeprefix("agent."))
        if self._on_end is not None:
            self._on_end(terminal)
        return True

    def cancel(self, terminal: dict[str, Any] | None = None) -> bool:
        """End the turn now (agent.interrupted unless told otherwise) and stop its task,
        without waiting for it; False if the turn had already ended."""
        finished = self.finish(terminal or interrupted_event())
        if self.task is not None:
            self.task.cancel()
        return finished

    def abandon(self) -> bool:
        """Stop without a terminal event: another process already sent this turn's
        (it was cancelled there, or this process was counted as lost)."""
        if not self.open:
            return False
        self._close("abandoned")
        if self.task is not None:
            self.task.cancel()
        return True

    def _close(self, outcome: str) -> None:
        self.open = False
        self.pending = None  # an answer arriving now matches nothing
        self._timer.cancel()
        self._metrics.turn_finished(outcome, time.perf_counter() - self._started)

    def fail(self, code: str, message: str) -> bool:
        """End the turn now with agent.error (e.g. the session store failed)."""
        return self.cancel(error_event(code, message))

    async def confirm(self, request: ConfirmRequest) -> None:
        """Ask for approval with agent.user_confirm and answer `request` with the first
        matching user.response, or as rejected ("timeout") after confirm_timeout_s. The
        turn's own deadline stands still meanwhile: a person's time is not the agent's."""
        loop = asyncio.get_running_loop()
        pending = self.pending = PendingConfirm(
            request, self._confirm_timeout_s, loop.create_future()
        )
        left = self._timer.when() - loop.time()
        self._timer.cancel()
        try:
            if self._questions is not None:
                await self._questions.ask(pending)
            self.step(pending.event())
            try:
                async with asyncio.timeout(self._confirm_timeout_s):
                    approved, feedback = await pending.answer
            except TimeoutError:
                if self._questions is None or await self._questions.withdraw(pending.step_id):
                    raise
                # An answer took the question on another process first; it is on its way.
                async with asyncio.timeout(ANSWER_IN_FLIGHT_S):
                    approved, feedback = await pending.answer
        except TimeoutError:
            request.reject(reason="timeout")
        else:
            if approved:
                request.approve(feedback)
            else:
                request.reject(feedback)
        finally:
            if self.pending is pending:
                self.pending = None
            if self.open:
                self._timer = loop.call_later(max(left, 0.0), self._time_out)

    def respond(self, step_id: str, approved: bool, feedback: str | None) -> bool:
        """Answer the pending confirmation if `step_id` is the one; False otherwise (none
        is pending, another is, or it was answered already)."""
        pending = self.pending
        if pending is None or pending.step_id != step_id or pending.answer.done():
            return False
        self.pending = None
        pending.answer.set_result((approved, feedback))
        return True

    def _time_out(self) -> None:
        timeout_s = self._timeout_s
        self.cancel(
            make_event(
                "agent.timeout",
                content=f"The turn took longer than {timeout_s:g} s and was stopped.",
                metadata={"timeout_s": timeout_s},
            )
        )


def start_turn(
    agent: Any,
    text: str,
    emit: Emit,
    *,
    pace: Pace,
    timeout_s: float,
    metrics: Metrics,
    confirm_timeout_s: float = 300.0,
    on_end: OnEnd | None = None,
    after: asyncio.Task[None] | None = None,
    questions: Questions | None = None,
    name: str = "turn",
    reveal_detail: bool = False,
) -> Turn:
    """Start one turn of `agent` as a task. `pace` waits for connections that fell behind
    (bounded); `on_end` runs once the terminal event is out; `after` is the previous
    turn's task, which may still be unwinding. `reveal_detail` (the server's --debug)
    puts the internal detail of errors on the wire; otherwise it goes to the log only."""
    turn = Turn(emit, metrics, timeout_s, confirm_timeout_s, on_end, questions)
    drive = _drive(agent, text, turn, pace, after, reveal_detail)
    turn.task = asyncio.create_task(drive, name=name)
    return turn


async def _drive(
    agent: Any,
    text: str,
    turn: Turn,
    pace: Pace,
    after: asyncio.Task[None] | None,
    reveal_detail: bool,
) -> None:
    """Run the agent, emitting its steps; every way out finishes the turn."""
    try:
        if after is not None and not after.done():
            await asyncio.wait([after])  # the agent's memory is the previous turn's until then
        async with contextlib.aclosing(agent.run(text)) as steps:
            count = 0
            async for step in steps:
                if isinstance(step, FinalAnswer):
                    turn.finish(make_event("agent.final_answer", content=step.text))
                    return
                if type(step) is ConfirmRequest:
                    await turn.confirm(step)
                    continue
                count += 1
                event = step_event(step, reveal_detail)
                if count == 1 and type(step) is Thinking:
                    # The turn's message, once: a replay (a reloaded page, a second tab)
                    # shows what was asked, since the server replays only its own events.
                    event["metadata"]["user_message"] = text[:MAX_ECHO_CHARS]
                if turn.step(event):
                    await pace()
                elif type(step) is Thinking or count % STEPS_PER_YIELD == 0:
                    # Thinking precedes a model call, whose request takes a millisecond or
                    # more to build: other turns send what they have first. (200 turns
                    # starting at once: the last one's first event 340 ms late without.)
                    await asyncio.sleep(0)
        turn.finish(error_event("internal_error", "The agent stopped without an answer."))
    except asyncio.CancelledError:
        turn.finish(interrupted_event())  # a no-op when cancel() already ended the turn
    except AgentError as exc:
        turn.finish(error_event(exc.code, _error_text(exc, reveal_detail)))
    except Exception as exc:
        log.exception("turn failed")
        turn.finish(
            error_event(
                "internal_error",
                f"The agent failed unexpectedly ({type(exc).__name__}); see the server log.",
            )
        )


def _error_text(exc: AgentError, reveal_detail: bool) -> str:
    """What agent.error says: the whole text with `reveal_detail`, else the public text
    (no endpoint, path or upstream body), the whole one going to the log."""
    full = str(exc)
    if reveal_detail:
        return full
    public = exc.public
    if public != full:
        task = asyncio.current_task()
        log.warning("%s failed (%s): %s", task.get_name() if task else "turn", exc.code, full)
    return public
