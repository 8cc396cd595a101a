"""The `ag-ui` WebSocket binding (docs/agui.md): AG-UI has none yet (its issue 2105).

A WebSocket at our endpoint that chooses the subprotocol `ag-ui` sends RunAgentInput
frames to run, and our own user.reconnect and user.cancel; it gets AG-UI events, one per
text frame, each with metadata {seq, part}: the session event it came from and its place
among that event's AG-UI events. A resume sends everything after (last_seq, last_part)
again, translated anew from the start of the run it belongs to. Only these connections
translate: a myagent-ws connection never comes here. app.py imports this module with
the first such socket: it imports ag_ui.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from ag_ui.core import BaseEvent, RunAgentInput, RunErrorEvent
from aiohttp import WSCloseCode, WSMsgType, web

from .agui import Adapter, Refused, Tail, validate_input
from .agui_translate import Translator, nothing_to_run, run_refused
from .connection import RateLimit
from .outbound import CLOSE_SLOW_CONSUMER
from .protocol import Protocol, ProtocolError
from .session import Session
from .sessions import check_owner
from .settings import Settings

log = logging.getLogger(__name__)

ALL_PARTS = 1 << 30  # a resume without last_part had every part of last_seq


class Socket(Tail):
    """A WebSocket that chose the subprotocol `ag-ui`: RunAgentInput, user.reconnect and
    user.cancel frames in; AG-UI events out, one per text frame (docs/agui.md)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        adapter: Adapter,
        protocol: Protocol,
        settings: Settings,
        principal: str | None,
    ) -> None:
        super().__init__(principal)
        self.ws = ws
        self.adapter = adapter
        self.protocol = protocol
        self.rate = RateLimit(settings)
        # Per session: its translator, and the position up to which the client has it.
        self.states: dict[Session, tuple[Translator, tuple[int, int]]] = {}
        self.lock = asyncio.Lock()  # one sender at a time; a resume waits for a batch
        self.pump: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        """Connection-level myagent-ws frames (the heartbeat, a reload's notice) are not
        AG-UI: not sent. WebSocket pings keep the link alive."""

    async def serve(self, agents: list[str] | None = None) -> None:
        """Run the socket until the peer or the server closes it. `agents` is there for
        the call app.py shares with Connection (its system.connected lists them): AG-UI
        has no such greeting, so it goes unused."""
        self.pump = asyncio.create_task(self._pump(), name=f"pump {self.id}")
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    await self._handle(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._error("unsupported_frame", "Send each frame as JSON text.")
        finally:
            self.adapter.sessions.detach(self)
            await self.close()

    async def close(self, code: int = WSCloseCode.OK, timeout_s: float = 5.0) -> None:
        """Send what is owed (for timeout_s at most), then close."""
        self._closing = True  # Paced.behind: a closing reader holds no turn back
        self.wake.set()
        if self._progress is not None:
            self._progress.set()
        if self.pump is not None and not self.pump.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.pump), timeout_s)
            except TimeoutError:
                self.pump.cancel()
        if not self.ws.closed:
            await self.ws.close(code=code)

    async def _pump(self) -> None:
        """Translate and send what the attached sessions add, in order."""
        try:
            while True:
                self.wake.clear()
                async with self.lock:
                    for session, seq, event in self.take():
                        state = self._state(session)
                        if state is None:
                            continue
                        translator, mark = state
                        for agui in translator.feed(seq, event):
                            if (seq, agui.metadata["part"]) > mark:
                                await self.ws.send_str(agui.model_dump_json(by_alias=True))
                    for ended in [s for s in self.states if not self.follows(s)]:
                        del self.states[ended]
                if self.lost:
                    why = b"too slow: reconnect"
                    await asyncio.wait_for(self.ws.close(code=CLOSE_SLOW_CONSUMER, message=why), 2)
                    return
                if self._closing:
                    return
                await self.wake.wait()
        except (ConnectionError, TimeoutError):
            return
        except Exception:  # a translation bug: close with 1011 rather than go quiet
            log.exception("AG-UI socket %s: sending failed", self.id)
            with contextlib.suppress(Exception):
                await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"server error")

    def _state(self, session: Session) -> tuple[Translator, tuple[int, int]] | None:
        state = self.states.get(session)
        if state is None and (thread := self.adapter.by_session.get(session.id)) is not None:
            state = self.states[session] = (Translator(thread, positions=True), (0, 0))
        return state

    async def _handle(self, data: str) -> None:
        try:
            await self.rate.admit()
            self.protocol.check_size(data)
            try:
                raw = json.loads(data)
            except (ValueError, RecursionError):
                raise Refused("invalid_json", "Frames are JSON: a RunAgentInput, mostly.") from None
            if isinstance(raw, dict) and "event" in raw:
                await self._ours(self.protocol.decode(data))
            else:
                await self._run(validate_input(raw))
        except Refused as exc:
            await self._error(exc.code, exc.message)
        except ProtocolError as exc:
            await self._error(exc.code, exc.message, **exc.metadata)
        except Exception:
            log.exception("ag-ui connection %s: handling a frame failed", self.id)
            await self._error("internal_error", "The server failed to handle that frame.")

    async def _run(self, data: RunAgentInput) -> None:
        props = data.forwarded_props
        name = props.get("agent") if isinstance(props, dict) else None
        try:
            if name is not None and not isinstance(name, str):
                raise Refused("invalid_input", "forwardedProps.agent is an agent's name.")
            agent = self.adapter.agent(name)
            _, run = await self.adapter.start(self.principal, agent, data, self)
        except Refused as exc:
            await self._reply(run_refused(data.thread_id, data.run_id, exc.code, exc.message))
            return
        if run is None:  # its events come through the pump otherwise
            await self._reply(nothing_to_run(data.thread_id, data.run_id))

    async def _ours(self, message: dict[str, Any]) -> None:
        """user.reconnect and user.cancel, as in our own protocol."""
        if message["event"] == "user.cancel":
            session = self.adapter.sessions.get(message["session_id"], self)
            await session.cancel("the turn was cancelled.")
        elif message["event"] == "user.reconnect":
            await self._resume(message["session_id"], message.get("content") or {})
        else:
            raise Refused(
                "unknown_event", "On ag-ui, send a RunAgentInput, user.reconnect or user.cancel."
            )

    async def _resume(self, session_id: str, content: dict[str, Any]) -> None:
        """Send the thread's events after (last_seq, last_part) again, then live ones:
        translated again from the start of the run they belong to."""
        last_seq, last_part = content.get("last_seq", 0), content.get("last_part", ALL_PARTS)
        if type(last_part) is not int or last_part < 0:
            raise Refused("schema_violation", "content.last_part is an integer, 0 or more.")
        sessions = self.adapter.sessions
        session = sessions.sessions.get(session_id)
        thread = self.adapter.by_session.get(session_id)
        if session is None or session.closed or thread is None:
            raise Refused("session_not_found", "That thread's session ended; start a new run.")
        check_owner(session.owner, self.principal, session_id)
        before = [run.after for run in thread.runs if run.after <= last_seq]
        start = before[-1] if before else min((r.after for r in thread.runs), default=session.seq)
        gap = start < session.buffer.first_seq - 1
        async with self.lock:
            sessions.follow(session, self, session.seq if gap else start)
            self.states[session] = (Translator(thread, positions=True), (last_seq, last_part))
        if gap:
            await self._error("replay_gap", f"Events after seq {last_seq} are no longer kept.")

    async def _error(self, code: str, message: str, **metadata: Any) -> None:
        """RUN_ERROR, with no metadata but what the error carries (rate_limited's
        retry_after_ms): it is no session event, so it has no seq."""
        await self._reply([RunErrorEvent(message=message, code=code, metadata=metadata or None)])

    async def _reply(self, events: list[BaseEvent]) -> None:
        """Answers to the client's own frames: not session events, so no seq."""
        async with self.lock:
            try:
                for event in events:
                    await self.ws.send_str(event.model_dump_json(by_alias=True))
            except ConnectionError:
                pass
