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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from myagent.errors import AgentError
from myagent.events import FinalAnswer, TextDelta, Thinking, ToolCall, ToolFinished

from .protocol import make_event

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

# A model that streams without ever suspending would starve the connection writers until
# its turn ended; the turn lets them run after this many steps.
STEPS_PER_YIELD = 32

# Emits one event; True when a connection fell behind and the turn should await `Pace`.
Emit = Callable[[dict[str, Any]], bool]
Pace = Callable[[], Awaitable[None]]


def step_event(step: Any) -> dict[str, Any]:
    """The protocol event for one agent step event."""
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
            return make_event(
                "agent.tool_result",
                step_id=step.call_id,
                content=step.output,
                metadata={
                    "tool": step.tool,
                    "status": step.status,
                    "duration_ms": round(step.duration_ms, 3),
                    "call_id": step.call_id,
                },
            )
    raise TypeError(f"unknown agent step event {step!r}")


def error_event(code: str, message: str) -> dict[str, Any]:
    return make_event("agent.error", content=message, metadata={"code": code})


def interrupted_event() -> dict[str, Any]:
    return make_event("agent.interrupted", content="The turn was cancelled.")


class Turn:
    """One accepted user.message: its task, its deadline and its one terminal event."""

    __slots__ = ("_emit", "_metrics", "_pending_first", "_started", "_timer", "open", "task")

    def __init__(self, emit: Emit, metrics: Metrics, timeout_s: float) -> None:
        self._emit = emit
        self._metrics = metrics
        self._started = time.perf_counter()
        self._pending_first = True
        self.open = True
        self.task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout_s, self._time_out, timeout_s)
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
        self.open = False
        self._timer.cancel()
        outcome = terminal["event"].removeprefix("agent.")
        self._metrics.turn_finished(outcome, time.perf_counter() - self._started)
        return True

    def cancel(self, terminal: dict[str, Any] | None = None) -> bool:
        """End the turn now (agent.interrupted unless told otherwise) and stop its task,
        without waiting for it; False if the turn had already ended."""
        finished = self.finish(terminal or interrupted_event())
        if self.task is not None:
            self.task.cancel()
        return finished

    def fail(self, code: str, message: str) -> bool:
        """End the turn now with agent.error (e.g. the session store failed)."""
        return self.cancel(error_event(code, message))

    def _time_out(self, timeout_s: float) -> None:
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
    after: asyncio.Task[None] | None = None,
    name: str = "turn",
) -> Turn:
    """Start one turn of `agent` as a task. `pace` waits for connections that fell behind
    (bounded); `after` is the previous turn's task, which may still be unwinding."""
    turn = Turn(emit, metrics, timeout_s)
    turn.task = asyncio.create_task(_drive(agent, text, turn, pace, after), name=name)
    return turn


async def _drive(
    agent: Any, text: str, turn: Turn, pace: Pace, after: asyncio.Task[None] | None
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
                count += 1
                if turn.step(step_event(step)):
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
        turn.finish(error_event(exc.code, str(exc)))
    except Exception as exc:
        log.exception("turn failed")
        turn.finish(
            error_event(
                "internal_error",
                f"The agent failed unexpectedly ({type(exc).__name__}); see the server log.",
            )
        )
