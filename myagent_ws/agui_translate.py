"""Session events -> AG-UI events: what one thread's runs look like in AG-UI.

A pure function of the session's events and the thread's runs: ids come from event ids
and timestamps from event timestamps, so translating a stretch again (a WebSocket client
resuming) gives exactly the events sent the first time. Events are the official
ag-ui-protocol models; nothing here is written by hand. Only agui_http and agui_socket
import this, so ag_ui loads with the first AG-UI client, not with the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    Interrupt,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

from .agui import Run, Thread

# What an interrupt's resume payload holds (docs.ag-ui.com/concepts/interrupts).
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "feedback": {"type": "string"}},
    "required": ["approved"],
}


def _ms(timestamp: str | None) -> int | None:
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000) if timestamp else None


class Translator:
    """One thread's session events -> AG-UI events, in order. With `positions` (the
    WebSocket binding) each carries metadata {seq, part, session_id, thread_id, run_id}:
    where it came from, so a client can resume after it."""

    def __init__(self, thread: Thread, positions: bool = False) -> None:
        self.thread = thread
        self.positions = positions
        self.run: Run | None = None
        self.open = False  # self.run has started and not ended
        self.message: str | None = None  # the open text message
        self.step: str | None = None  # the open step

    def finished(self, run: Run) -> bool:
        return self.run is run and not self.open

    def feed(self, seq: int, event: dict[str, Any]) -> list[BaseEvent]:
        """The AG-UI events of session event `seq` (none outside the thread's runs)."""
        handler = _HANDLERS.get(event["event"])
        run = self.thread.run_of(seq)
        if handler is None or run is None or self.finished(run):
            return []
        out: list[BaseEvent] = []
        if run is not self.run:  # the run's first event: it starts now
            if self.open:
                out += self._end(RunErrorEvent(message="A newer run took over.", code="superseded"))
            self.run, self.open, self.message, self.step = run, True, None, None
            out.append(run_started(self.thread.id, run.id))
        out += handler(self, event)
        stamp = _ms(event.get("timestamp"))
        where = {"seq": seq, "session_id": event["session_id"], "thread_id": self.thread.id}
        for part, agui in enumerate(out, 1):
            agui.timestamp = stamp
            if self.positions:
                agui.metadata = {**(agui.metadata or {}), **where, "part": part, "run_id": run.id}
        return out

    def fail(self, run: Run, code: str, message: str) -> list[BaseEvent]:
        """Events that end `run` with RUN_ERROR, whatever it got to (none if it ended)."""
        if self.finished(run):
            return []
        if self.run is not run:
            return run_refused(self.thread.id, run.id, code, message)
        return self._end(RunErrorEvent(message=message, code=code))

    def _end_text(self) -> list[BaseEvent]:
        message, self.message = self.message, None
        return [TextMessageEndEvent(message_id=message)] if message else []

    def _end(self, last: BaseEvent) -> list[BaseEvent]:
        """Close what is open, then the run."""
        out = self._end_step()
        self.open = False
        return [*out, last]

    def _finish(self, outcome: Any) -> list[BaseEvent]:
        run = self.run
        return self._end(RunFinishedEvent(thread_id=self.thread.id, run_id=run.id, outcome=outcome))

    # -- one method per session event that means something here ---------------------------

    def _thinking(self, event: dict[str, Any]) -> list[BaseEvent]:
        out = self._end_step()
        self.step = f"step {event['metadata']['step']}"
        return [*out, StepStartedEvent(step_name=self.step)]

    def _end_step(self) -> list[BaseEvent]:
        """Close the open text message and step, if any."""
        out = self._end_text()
        if self.step:
            out.append(StepFinishedEvent(step_name=self.step))
            self.step = None
        return out

    def _partial(self, event: dict[str, Any]) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if self.message is None:
            self.message = event["event_id"]
            out.append(TextMessageStartEvent(message_id=self.message, role="assistant"))
        delta = event.get("content") or ""
        return [*out, TextMessageContentEvent(message_id=self.message, delta=delta)]

    def _tool_call(self, event: dict[str, Any]) -> list[BaseEvent]:
        meta, call = event["metadata"], event["step_id"]
        args = json.dumps(meta.get("args") or {}, ensure_ascii=False)
        return [
            *self._end_text(),
            ToolCallStartEvent(tool_call_id=call, tool_call_name=meta["tool"]),
            ToolCallArgsEvent(tool_call_id=call, delta=args),
            ToolCallEndEvent(tool_call_id=call),
        ]

    def _tool_result(self, event: dict[str, Any]) -> list[BaseEvent]:
        result = ToolCallResultEvent(
            message_id=event["event_id"],
            tool_call_id=event["step_id"],
            content=str(event.get("content") or ""),
            role="tool",
        )
        result.metadata = {"status": event["metadata"]["status"]}
        return [*self._end_text(), result]

    def _final(self, event: dict[str, Any]) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        text = event.get("content")
        if self.message is None and text:  # nothing was streamed: the answer in one piece
            message = event["event_id"]
            out += [
                TextMessageStartEvent(message_id=message, role="assistant"),
                TextMessageContentEvent(message_id=message, delta=str(text)),
                TextMessageEndEvent(message_id=message),
            ]
        return out + self._finish(RunFinishedSuccessOutcome())

    def _confirm(self, event: dict[str, Any]) -> list[BaseEvent]:
        meta, call = event["metadata"], event["step_id"]
        interrupt = Interrupt(
            id=call,
            reason="tool_call",
            message=event.get("content"),
            tool_call_id=call,
            response_schema=ANSWER_SCHEMA,
            expires_at=meta.get("expires_at"),
            metadata={"tool": meta.get("tool"), "args": meta.get("args")},
        )
        return self._finish(RunFinishedInterruptOutcome(interrupts=[interrupt]))

    def _failed(self, event: dict[str, Any]) -> list[BaseEvent]:
        meta = event.get("metadata") or {}
        code = meta.get("code") or meta.get("reason") or event["event"].removeprefix("agent.")
        return self._end(RunErrorEvent(message=str(event.get("content") or code), code=code))

    def _interrupted(self, event: dict[str, Any]) -> list[BaseEvent]:
        if (event.get("metadata") or {}).get("reason"):  # the session ended: not asked for
            return self._failed(event)
        return self._finish(RunFinishedCancelledOutcome())


_HANDLERS: dict[str, Callable[[Translator, dict[str, Any]], list[BaseEvent]]] = {
    "agent.partial_answer": Translator._partial,
    "agent.thinking": Translator._thinking,
    "agent.tool_call": Translator._tool_call,
    "agent.tool_result": Translator._tool_result,
    "agent.final_answer": Translator._final,
    "agent.user_confirm": Translator._confirm,
    "agent.error": Translator._failed,
    "agent.timeout": Translator._failed,
    "agent.interrupted": Translator._interrupted,
    "agent.session_end": Translator._failed,
}


def run_started(thread_id: str, run_id: str) -> RunStartedEvent:
    """RUN_STARTED, declaring the protocol version this server speaks."""
    event = RunStartedEvent(thread_id=thread_id, run_id=run_id)
    event.protocol_version = PROTOCOL_VERSION
    return event


def run_refused(thread_id: str, run_id: str, code: str, message: str) -> list[BaseEvent]:
    """A run that ends before it did anything: RUN_STARTED, then RUN_ERROR with `code`."""
    return [run_started(thread_id, run_id), RunErrorEvent(message=message, code=code)]


def nothing_to_run(thread_id: str, run_id: str) -> list[BaseEvent]:
    """A resume that only cancelled closed interrupts: the run has nothing to do."""
    outcome = RunFinishedSuccessOutcome()
    return [
        run_started(thread_id, run_id),
        RunFinishedEvent(thread_id=thread_id, run_id=run_id, outcome=outcome),
    ]
