"""An asyncio client for myagent-ws, on aiohttp, with the JavaScript client's guarantees.

    from myagent_ws.client import connect
    async with connect("ws://127.0.0.1:8080/") as client:
        session = await client.create_session("weather-assistant")  # None: the default agent
        async for event in session.send("北京今天天气怎么样？"):      # until the terminal event
            print(event["event"], event.get("content"))
        answer = await session.ask("And in Shanghai?")               # the final answer text

One reader task owns the socket. After an unexpected close it reconnects with backoff,
re-attaches every session with `user.reconnect` from the last `seq` it delivered, and drops
anything at or below that seq, so each session event is delivered exactly once, in order,
across dropped links. It acknowledges what it has delivered (`user.ack`) at most every
`ack_interval_s`, so the server can trim its replay buffer. A gap the server can no longer
replay is not skipped silently: `agent.session_resumed` carries `metadata.replay_gap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["TERMINAL", "Backoff", "Client", "ClientError", "Session", "Turn", "connect"]

TERMINAL = frozenset({"agent.final_answer", "agent.error", "agent.timeout", "agent.interrupted"})
# Errors the server answers a user.create_session with (they name no session).
CREATE_ERRORS = frozenset(
    {"agent_not_found", "agent_required", "too_many_sessions", "server_draining", "rate_limited"}
)
# Errors after which a session is no longer this client's to use.
_SESSION_GONE = frozenset(
    {"session_not_found", "forbidden", "connection_lost", "offline", "unauthorized", "closed"}
)
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class ClientError(Exception):
    """The server refused something (`code` is its error code), or the link is gone."""

    def __init__(self, message: str, code: str, event: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.event = event


@dataclass(frozen=True)
class Backoff:
    """The wait before reconnect attempt n: min(max_s, initial_s * factor**n), less a random
    share up to `jitter` so that many clients do not retry in step."""

    initial_s: float = 0.5
    max_s: float = 15.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * self.factor**attempt)
        return ceiling * (1 - self.jitter * random.random())


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
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(client.max_queued)
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
        await self.client._send(
            {
                "event": "user.response",
                "session_id": self.id,
                "step_id": step_id,
                "content": content,
            }
        )

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

    async def _deliver(self, event: dict[str, Any]) -> None:
        if event["event"] == "agent.session_end":
            self.ended = True
        await self._queue.put(event)  # full: the reader waits for this session's reader


class Turn:
    """The events of one user.message, read with `async for`; the message goes out when
    the loop starts."""

    def __init__(self, session: Session, text: str, timeout_s: float) -> None:
        self.session = session
        self.text = text
        self.timeout_s = timeout_s
        self.done = False  # the terminal event was read
        self._deadline: float | None = None
        self._started = False  # an event with a seq arrived after the message went out

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
                if code == "rate_limited" and not self._started:
                    await self._resend(event)
                    continue
                if not self._started or code in _SESSION_GONE:
                    self.done = True
                    raise ClientError(str(event.get("content")), code, event)
            elif name == "agent.session_end":
                self.done = True
                raise ClientError(str(event.get("content")), "session_end", event)
            if "seq" in event:
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
        self._deadline = asyncio.get_running_loop().time() + self.timeout_s
        if previous is not None and not previous.done:
            with contextlib.suppress(ClientError):
                await session.cancel()
                async for _ in previous:
                    pass
        await session.client._send(
            {"event": "user.message", "session_id": session.id, "content": self.text}
        )

    async def _resend(self, refusal: dict[str, Any]) -> None:
        """rate_limited: wait as the server says, then send the message again."""
        wait_ms = (refusal.get("metadata") or {}).get("retry_after_ms", 1000)
        await asyncio.sleep(wait_ms / 1000)
        await self.session.client._send(
            {"event": "user.message", "session_id": self.session.id, "content": self.text}
        )


class Client:
    """A connection to one server that survives dropped links. Use `connect()`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        reconnect: bool = True,
        backoff: Backoff = Backoff(),
        max_attempts: int = 20,
        ack_interval_s: float = 0.5,
        request_timeout_s: float = 15.0,
        turn_timeout_s: float = 600.0,
        max_queued: int = 100_000,
        heartbeat_s: float | None = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.ack_interval_s = ack_interval_s
        self.request_timeout_s = request_timeout_s
        self.turn_timeout_s = turn_timeout_s
        self.max_queued = max_queued  # events per session not yet read: then backpressure
        self.heartbeat_s = heartbeat_s
        self.info: dict[str, Any] = {}  # system.connected metadata: agents, server_version...
        self.sessions: dict[str, Session] = {}
        self.reconnects = 0
        self.state = "idle"  # connecting, connected, reconnecting, closed
        self.error: ClientError | None = None  # why the client stopped, if it did
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._creates: list[asyncio.Future[dict[str, Any]]] = []
        self._lists: list[asyncio.Future[list[dict[str, Any]]]] = []
        self._ack_due = asyncio.Event()

    @property
    def agents(self) -> list[str]:
        return list(self.info.get("agents") or [])

    # -- requests ----------------------------------------------------------------------------

    async def create_session(self, agent: str | None = None) -> Session:
        """A new session of `agent` (None: the server's default agent)."""
        message: dict[str, Any] = {"event": "user.create_session"}
        if agent is not None:
            message["content"] = {"agent": agent}
        event = await self._request(self._creates, message)
        return self.sessions[event["session_id"]]

    async def list_agents(self) -> list[dict[str, Any]]:
        """[{name, description, tools}] of every agent the server offers."""
        return await self._request(self._lists, {"event": "user.list_agents"})

    async def attach(self, session_id: str, last_seq: int = 0) -> Session:
        """Adopt a session by id (another process's, or one kept across a restart): the
        server replays what it still buffers after `last_seq`, then live events."""
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(self, session_id, None)
            session.last_seq = session.acked_seq = last_seq
            await self._send(self._reattach_frame(session))
        return session

    async def _request(self, queue: list[asyncio.Future[Any]], message: dict[str, Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            await self._send(message)
            async with asyncio.timeout(self.request_timeout_s):
                return await future
        except TimeoutError:
            raise ClientError(
                f"The server did not answer {message['event']} in time.", "timeout"
            ) from None
        finally:
            if future in queue:
                queue.remove(future)

    # -- the link ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (once; a refused first connection raises) and start the reader."""
        self._http = aiohttp.ClientSession()
        self.state = "connecting"
        try:
            await self._connect()
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read_forever(), name="myagent-ws client reader")
        self._acker = asyncio.create_task(self._ack_forever(), name="myagent-ws client acks")

    async def close(self) -> None:
        """Close the socket and stop reconnecting; pending requests fail."""
        self.state = "closed"
        for task in (self._reader, self._acker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._flush_acks()
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        self._fail_requests(self.error or ClientError("The client is closed.", "closed"))

    async def _connect(self) -> None:
        """Open a socket and wait for system.connected; then re-attach every session."""
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await self._http.ws_connect(
                self.url, headers=headers, heartbeat=self.heartbeat_s, max_msg_size=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise ClientError("The server refused the token (401).", "unauthorized") from exc
            if exc.status == 403:
                raise ClientError("The server refused this origin (403).", "forbidden") from exc
            raise
        async with asyncio.timeout(self.request_timeout_s):
            msg = await ws.receive()
        first = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else {}
        if first.get("event") != "system.connected":
            await ws.close()
            raise ClientError(f"Not a myagent-ws server: it sent {msg.type.name}.", "protocol")
        self.info = first.get("metadata") or {}
        self._ws = ws
        for session in self.sessions.values():
            await ws.send_str(json.dumps(self._reattach_frame(session)))
        self.state = "connected"
        self._connected.set()

    @staticmethod
    def _reattach_frame(session: Session) -> dict[str, Any]:
        return {
            "event": "user.reconnect",
            "session_id": session.id,
            "content": {"last_seq": session.last_seq},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        """Send a frame, waiting (bounded) for the link if it is being re-established."""
        if self.state == "closed":
            raise self.error or ClientError("The client is closed.", "closed")
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    await self._connected.wait()
            except TimeoutError:
                raise ClientError("Not connected to the server.", "not_connected") from None
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message, ensure_ascii=False))

    async def _read_forever(self) -> None:
        """Read until closed; after an unexpected close, reconnect with backoff."""
        while True:
            assert self._ws is not None
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(json.loads(msg.data))
                elif msg.type in _CLOSED or msg.type is aiohttp.WSMsgType.ERROR:
                    break
            self._connected.clear()
            self._fail_requests(ClientError("The connection dropped.", "connection_lost"))
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        """Try again with backoff; False (and the client stops) when it gives up."""
        if not self.reconnect or self.state == "closed":
            return self._stop(ClientError("The connection closed.", "connection_lost"))
        self.state = "reconnecting"
        for attempt in range(self.max_attempts):
            await asyncio.sleep(self.backoff.delay(attempt))
            try:
                await self._connect()
            except ClientError as exc:
                if exc.code in ("unauthorized", "forbidden"):
                    return self._stop(exc)
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError):
                continue
            else:
                self.reconnects += 1
                return True
        return self._stop(
            ClientError(f"Gave up after {self.max_attempts} reconnect attempts.", "offline")
        )

    def _stop(self, error: ClientError) -> bool:
        """The client gives up: every waiting reader gets the reason."""
        self.state = "closed"
        self.error = error
        self._connected.set()  # senders wake, see "closed", and raise
        end = {"event": "system.error", "content": str(error), "metadata": {"code": error.code}}
        for session in self.sessions.values():
            with contextlib.suppress(asyncio.QueueFull):
                session._queue.put_nowait(end)
        return False

    async def _on_frame(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        sid = event.get("session_id")
        seq = event.get("seq")
        session = self.sessions.get(sid) if sid else None
        if name == "agent.session_created" and session is None and self._creates:
            session = self.sessions[sid] = Session(
                self, sid, (event.get("content") or {}).get("agent")
            )
            session.last_seq = seq or 0
            self._ack_due.set()
            self._settle(self._creates, event)
            return
        if session is not None:
            if isinstance(seq, int):
                if seq <= session.last_seq:
                    return  # a duplicate from a replay
                session.last_seq = seq
                self._ack_due.set()
            elif name == "system.error" and (event.get("metadata") or {}).get("code") in (
                "session_not_found",
                "forbidden",
            ):
                self.sessions.pop(session.id, None)
                session.ended = True
            await session._deliver(event)
            if name == "agent.session_end":
                self.sessions.pop(session.id, None)
            return
        if name == "system.agents":
            self._settle(self._lists, event.get("content") or [])
        elif name == "system.error" and not sid:
            code = (event.get("metadata") or {}).get("code")
            if code in CREATE_ERRORS and self._creates:
                self._settle(self._creates, ClientError(str(event.get("content")), code, event))

    @staticmethod
    def _settle(queue: list[asyncio.Future[Any]], result: Any) -> None:
        while queue:
            future = queue.pop(0)
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
                return

    def _fail_requests(self, error: ClientError) -> None:
        for queue in (self._creates, self._lists):
            while queue:
                future = queue.pop(0)
                if not future.done():
                    future.set_exception(error)

    # -- acks --------------------------------------------------------------------------------

    async def _ack_forever(self) -> None:
        """At most one user.ack per session per interval, only for what is new."""
        while True:
            await self._ack_due.wait()
            await asyncio.sleep(self.ack_interval_s)
            self._ack_due.clear()
            if self._connected.is_set() and self.state == "connected":
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await self._flush_acks()

    async def _flush_acks(self) -> None:
        assert self._ws is not None
        for session in tuple(self.sessions.values()):
            if session.last_seq > session.acked_seq:
                acked = session.last_seq
                await self._ws.send_str(
                    json.dumps(
                        {
                            "event": "user.ack",
                            "session_id": session.id,
                            "content": {"last_seq": acked},
                        }
                    )
                )
                session.acked_seq = acked


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None = None, **options: Any) -> AsyncIterator[Client]:
    """A connected Client for the `async with` block; `options` are Client's keywords."""
    client = Client(url, token, **options)
    await client.open()
    try:
        yield client
    finally:
        await client.close()
