"""A session of myagent_ws.client and the turns run in it: what `send()` yields, when a
turn is over, and which message to send again after a reconnect."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

TERMINAL = frozenset({"agent.final_answer", "agent.error", "agent.timeout", "agent.interrupted"})
# Errors after which a session is no longer this client's to use.
_SESSION_GONE = frozenset(
    {
        "session_not_found",
        "forbidden",
        "connection_lost",
        "offline",
        "unauthorized",
        "closed",
        "failed",
    }
)


class ClientError(Exception):
    """The server refused something (`code` is its error code), or the link is gone."""

    def __init__(self, message: str, code: str, event: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.event = event


class Inbox:
    """A session's unread events, bounded in bytes (as they came on the wire): past
    `max_bytes` the client's reader waits for this session's reader (backpressure on the
    socket, so an unread session holds up the client's other sessions too)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[tuple[dict[str, Any], int]] = deque()
        self._ready = asyncio.Event()  # something to read
        self._room = asyncio.Event()  # under the bound
        self._room.set()

    def empty(self) -> bool:
        return not self._items

    async def put(self, event: dict[str, Any], size: int) -> None:
        while self.bytes >= self.max_bytes:
            self._room.clear()
            await self._room.wait()
        self.put_now(event, size)

    def put_now(self, event: dict[str, Any], size: int = 0) -> None:
        """Past the bound too: for the client's last word when it stops."""
        self._items.append((event, size))
        self.bytes += size
        self._ready.set()

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        event, size = self._items.popleft()
        self.bytes -= size
        if self.bytes < self.max_bytes:
            self._room.set()
        return event


class Session:
    """One agent session. Its events queue here until a turn (`send()`) or `events()` reads
    them."""

    def __init__(self, client: Client, session_id: str, agent: str | None) -> None:
        self.client = client
        self.id = session_id
        self.agent = agent
        self.last_seq = 0  # the highest seq delivered: duplicates are at or below it
        self.acked_seq = 0
        self.ended = False
        self.info: dict[str, Any] = {}  # agent.session_created metadata: agent, llm
        self._queue = Inbox(client.max_queued_bytes)
        self._turn: Turn | None = None

    def send(self, text: str, timeout_s: float | None = None) -> Turn:
        """Send `text` as a user.message; iterate the result for this session's events until
        the turn's terminal event (yielded too). A turn whose loop was left early is
        cancelled by the next send(), which skips the rest of its events."""
        return Turn(self, str(text), timeout_s or self.client.turn_timeout_s)

    async def ask(self, text: str, timeout_s: float | None = None) -> str:
        """Run one turn and return its final answer text; any other ending raises
        ClientError with the event's code (`llm_error`, `timeout`, `interrupted`, ...)."""
        async for event in self.send(text, timeout_s):
            if event["event"] == "agent.final_answer":
                return str(event.get("content") or "")
            if event["event"] in TERMINAL:
                code = (event.get("metadata") or {}).get("code") or event["event"].split(".")[1]
                raise ClientError(str(event.get("content") or code), code, event)
        raise ClientError("The turn ended without a terminal event.", "protocol")

    async def respond(
        self, step_id: str, approved: bool = True, feedback: str | None = None
    ) -> None:
        """Answer an agent.user_confirm."""
        content: dict[str, Any] = {"approved": bool(approved)}
        if feedback:
            content["feedback"] = feedback
        frame = {"event": "user.response", "session_id": self.id, "step_id": step_id}
        frame["content"] = content
        if self._turn is not None:  # asked again after a reconnect: it was lost, send it again
            self._turn.answered[step_id] = (frame, self.client.reconnects)
        await self.client._send(frame)

    async def cancel(self) -> None:
        """Stop the running turn: it ends with agent.interrupted."""
        await self.client._send({"event": "user.cancel", "session_id": self.id})

    async def end(self) -> None:
        """Close the session on the server; it answers agent.session_end."""
        await self.client._send({"event": "user.end_session", "session_id": self.id})

    async def events(self, idle_timeout_s: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """This session's events as they come, outside any turn (e.g. a turn another
        connection runs in this session); ends after agent.session_end. `idle_timeout_s`
        bounds the wait for each event."""
        while not (self.ended and self._queue.empty()):
            async with asyncio.timeout(idle_timeout_s):
                event = await self._queue.get()
            yield event

    async def _deliver(self, event: dict[str, Any], size: int) -> None:
        await self._queue.put(event, size)


class Turn:
    """The events of one user.message, read with `async for`; the message goes out when
    the loop starts."""

    def __init__(self, session: Session, text: str, timeout_s: float) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self.done = False  # the terminal event was read
        self.message = {
            "event": "user.message",
            "session_id": session.id,
            "content": text,
            "metadata": {"message_id": uuid.uuid4().hex},  # a resend runs it once
        }
        self._deadline: float | None = None
        self._started = False  # an event with a seq arrived after the message went out
        self.asked: set[str] = set()  # step_ids of the questions yielded
        # step_id -> (the user.response, client.reconnects when it was sent)
        self.answered: dict[str, tuple[dict[str, Any], int]] = {}

    def __aiter__(self) -> Turn:
        return self

    async def __anext__(self) -> dict[str, Any]:
        session = self.session
        if self.done:
            raise StopAsyncIteration
        if self._deadline is None:
            await self._begin()
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    event = await session._queue.get()
            except TimeoutError:
                raise ClientError(
                    f"No terminal event within {self.timeout_s:g} s.", "timeout"
                ) from None
            name = event["event"]
            if name == "system.error":
                code = (event.get("metadata") or {}).get("code", "error")
                if code == "rate_limited":
                    refused = (event.get("metadata") or {}).get("refused_event")
                    if refused == "user.message" and not self._started:
                        await self._resend(event)
                        continue
                    return event  # another frame of ours (a cancel, an answer): said
                if not self._started or code in _SESSION_GONE:
                    self.done = True
                    raise ClientError(str(event.get("content")), code, event)
            elif name == "agent.session_end":
                self.done = True
                raise ClientError(str(event.get("content")), "session_end", event)
            elif name == "agent.user_confirm" and await self._asked_before(event):
                continue
            if "seq" in event and name != "agent.session_resumed":
                self._started = True
            if name in TERMINAL:
                self.done = True
            return event

    async def _begin(self) -> None:
        """Finish (cancel, skip) an abandoned turn of this session, then send the message."""
        session = self.session
        if session.ended:
            raise ClientError("The session has ended; create a new one.", "session_end")
        previous, session._turn = session._turn, self
        now = asyncio.get_running_loop().time()
        self._deadline = now + self.timeout_s
        if previous is not None and not previous.done:  # left early, or it timed out
            await session.cancel()
            previous._deadline = now + session.client.request_timeout_s
            try:
                async for _ in previous:
                    pass
            except ClientError as exc:
                if exc.code == "timeout":
                    raise ClientError(
                        "The previous turn of this session did not end after its cancel.",
                        "timeout",
                    ) from None
        await session.client._send(self.message)

    async def _asked_before(self, event: dict[str, Any]) -> bool:
        """A question asked again after a reconnect is not yielded twice; if it was
        answered before that reconnect, the answer was lost with the link: send it again."""
        step_id = event.get("step_id") or ""
        if step_id not in self.asked:
            self.asked.add(step_id)
            return False
        answer = self.answered.get(step_id)
        if answer is not None and answer[1] < self.session.client.reconnects:
            self.answered[step_id] = (answer[0], self.session.client.reconnects)
            await self.session.client._send(answer[0])
        return True

    def relinked(self) -> dict[str, Any] | None:
        """After a reconnect: the message again, unless events show it arrived (a message
        written just before the link dropped may be lost; the server runs a repeat once)."""
        return self.message if not (self.done or self._started) else None

    async def _resend(self, refusal: dict[str, Any]) -> None:
        """rate_limited: wait as the server says, then send the message again."""
        wait_ms = (refusal.get("metadata") or {}).get("retry_after_ms", 1000)
        await asyncio.sleep(wait_ms / 1000)
        await self.session.client._send(self.message)
