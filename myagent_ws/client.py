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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .client_session import TERMINAL, ClientError, Session, Turn

__all__ = ["TERMINAL", "Backoff", "Client", "ClientError", "Session", "Turn", "connect"]

CREATE_ERRORS = frozenset(
    {"agent_not_found", "agent_required", "too_many_sessions", "server_draining", "rate_limited"}
)
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


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
        max_queued_bytes: int = 16 * 2**20,
        heartbeat_s: float | None = 30.0,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.ack_interval_s = ack_interval_s
        self.request_timeout_s = request_timeout_s
        self.turn_timeout_s = turn_timeout_s
        if max_queued_bytes <= 0:
            raise ValueError("max_queued_bytes must be positive")
        # Unread per session, counted as the frames' JSON text; then backpressure.
        self.max_queued_bytes = max_queued_bytes
        self.heartbeat_s = heartbeat_s
        # Called with each new state, in the reader's task: it must not block or raise.
        self.on_state = on_state
        self.info: dict[str, Any] = {}  # system.connected metadata: agents, server_version...
        self.sessions: dict[str, Session] = {}
        self.reconnects = 0
        self._state = "idle"
        self.error: ClientError | None = None  # why the client stopped, if it did
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._creates: list[asyncio.Future[dict[str, Any]]] = []
        self._lists: list[asyncio.Future[list[dict[str, Any]]]] = []
        self._ack_due = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()  # delayed re-attaches

    @property
    def state(self) -> str:
        """idle, connecting, connected, reconnecting or closed; on_state hears each change
        (a front end shows "reconnecting…" with it)."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value != self._state:
            self._state = value
            if self.on_state is not None:
                self.on_state(value)

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
        """Close the socket and stop reconnecting; pending requests and turns fail."""
        if self.error is None:
            self._stop(ClientError("The client is closed.", "closed"))
        for task in (self._reader, self._acker, *self._tasks):
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
        try:
            async with asyncio.timeout(self.request_timeout_s):
                msg = await ws.receive()
            first = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else {}
        except BaseException:
            await ws.close()
            raise
        if first.get("event") != "system.connected":
            await ws.close()
            raise ClientError(f"Not a myagent-ws server: it sent {msg.type.name}.", "protocol")
        self.info = first.get("metadata") or {}
        self._ws = ws
        for session in tuple(self.sessions.values()):
            await self._send_reattach(ws, session)
        self.state = "connected"
        self._connected.set()

    @staticmethod
    def _reattach_frame(session: Session) -> dict[str, Any]:
        return {
            "event": "user.reconnect",
            "session_id": session.id,
            "content": {"last_seq": session.last_seq},
        }

    async def _send_reattach(self, ws: aiohttp.ClientWebSocketResponse, session: Session) -> None:
        """user.reconnect from the session's last seq, and its open turn's message again
        unless events show it arrived (the server runs a repeat once)."""
        await ws.send_str(json.dumps(self._reattach_frame(session)))
        if session._turn is not None and (again := session._turn.relinked()) is not None:
            await ws.send_str(json.dumps(again, ensure_ascii=False))

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
        """Read until closed; after an unexpected close, reconnect with backoff. A failure
        of the client itself stops it, and every waiting turn hears why."""
        try:
            await self._read_and_reconnect()
        except Exception as exc:  # a bug or a garbled frame: said, never a silent hang
            self._stop(ClientError(f"The client failed: {type(exc).__name__}: {exc}", "failed"))

    async def _read_and_reconnect(self) -> None:
        while True:
            assert self._ws is not None
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(json.loads(msg.data), len(msg.data))
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
        self.error = error  # before the state, so that on_state("closed") can read it
        self.state = "closed"
        self._connected.set()  # senders wake, see "closed", and raise
        end = {"event": "system.error", "content": str(error), "metadata": {"code": error.code}}
        for session in self.sessions.values():
            session.ended = True
            session._queue.put_now(end)
        return False

    async def _on_frame(self, event: dict[str, Any], size: int) -> None:
        name = event.get("event")
        sid = event.get("session_id")
        seq = event.get("seq")
        session = self.sessions.get(sid) if sid else None
        if name == "agent.session_created" and session is None and self._creates:
            session = self.sessions[sid] = Session(
                self, sid, (event.get("content") or {}).get("agent")
            )
            session.last_seq = seq or 0
            session.info = event.get("metadata") or {}
            self._ack_due.set()
            self._settle(self._creates, event)
            return
        if session is not None:
            meta = event.get("metadata") or {}
            if isinstance(seq, int) and seq <= session.last_seq:
                return  # a duplicate from a replay
            if name == "system.error" and meta.get("refused_event") == "user.reconnect":
                self._later(self._reattach_after(session, meta.get("retry_after_ms", 1000)))
                return  # rate_limited re-attaching many sessions at once: again, later
            await session._deliver(event, size)
            if isinstance(seq, int):  # only once delivered: acks never cover what was not
                session.last_seq = seq
                self._ack_due.set()
            gone = name == "system.error" and meta.get("code") in ("session_not_found", "forbidden")
            if gone or name == "agent.session_end":
                self.sessions.pop(session.id, None)
                session.ended = True
            return
        if name == "system.agents":
            self._settle(self._lists, event.get("content") or [])
        elif name == "system.error" and not sid:
            code = (event.get("metadata") or {}).get("code")
            if code in CREATE_ERRORS and self._creates:
                self._settle(self._creates, ClientError(str(event.get("content")), code, event))

    def _later(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reattach_after(self, session: Session, wait_ms: int) -> None:
        """A refused user.reconnect (rate_limited): the same re-attach after the wait."""
        await asyncio.sleep(wait_ms / 1000)
        if self.sessions.get(session.id) is session and self._ws is not None:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await self._send_reattach(self._ws, session)

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
            if self.state == "connected":
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
