"""One turn: drive the agent, turn its steps into agent.* events, end with exactly one
terminal event (final_answer, error, timeout or interrupted). It never encodes or sends:
events go to `session.emit`.
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
    from .sessions import Session

log = logging.getLogger(__name__)


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


async def run_turn(session: Session, text: str, timeout_s: float, metrics: Metrics) -> None:
    """Run one turn of the session's agent; every outcome becomes exactly one terminal event."""
    started = time.perf_counter()
    metrics.turn_started()
    pending_first = True

    async def emit(event: dict[str, Any]) -> None:
        nonlocal pending_first
        if pending_first:
            pending_first = False
            metrics.first_event(time.perf_counter() - started)
        await session.emit(event)

    terminal = await _drive(session.agent, text, timeout_s, emit, session.id)
    await emit(terminal)
    metrics.turn_finished(terminal["event"].removeprefix("agent."), time.perf_counter() - started)


async def _drive(
    agent: Any,
    text: str,
    timeout_s: float,
    emit: Callable[[dict[str, Any]], Awaitable[None]],
    session_id: str,
) -> dict[str, Any]:
    """Emit the turn's step events; return (not emit) its terminal event."""
    try:
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(agent.run(text)) as steps:
                async for step in steps:
                    if isinstance(step, FinalAnswer):
                        return make_event("agent.final_answer", content=step.text)
                    await emit(step_event(step))
        return _error("internal_error", "The agent stopped without an answer.")
    except TimeoutError:
        return make_event(
            "agent.timeout",
            content=f"The turn took longer than {timeout_s:g} s and was stopped.",
            metadata={"timeout_s": timeout_s},
        )
    except asyncio.CancelledError:
        return make_event("agent.interrupted", content="The turn was cancelled.")
    except AgentError as exc:
        return _error(exc.code, str(exc))
    except Exception as exc:
        log.exception("turn in session %s failed", session_id)
        return _error(
            "internal_error",
            f"The agent failed unexpectedly ({type(exc).__name__}); see the server log.",
        )


def _error(code: str, message: str) -> dict[str, Any]:
    return make_event("agent.error", content=message, metadata={"code": code})
