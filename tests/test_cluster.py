"""Scale out on Redis, end to end: real clusters of `myagent-ws server` processes sharing
sessions through Redis (tests/cluster.py), driven by real WebSocket clients, aiohttp's and
the `websockets` library's (both, across the file), against the agent in
tests/fixtures/cluster_agent.py ("stream N D", "book WHAT", anything else echoes the
remembered user messages).

What they hold the cluster to: seqs stay gapless and every event reaches a client exactly
once however it moves between processes; cancel and approval work from any process (the
first answer wins cluster-wide); one turn per session cluster-wide; a killed process's
turn ends with agent.error node_lost within node_lease_s and the session goes on elsewhere
with its memory; the operator endpoints tell processes apart; nginx round robin needs no
stickiness; and a Redis outage is survived (on a private redis-server: the shared one at
6379 is never stopped or flushed).

Every wait has a deadline. When a test fails, pytest shows the nodes' output (printed at
teardown, captured, shown only on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect as websockets_connect

from myagent_ws.protocol import Protocol
from tests.client import TERMINAL, names
from tests.cluster import REDIS_URL, Cluster, Node, free_port, redis_ping
from tests.conftest import CLUSTER_AGENT

LEASE_S = 3.0
PROTOCOL = Protocol()

Event = dict[str, Any]


# --- a client connection that checks what it receives -------------------------------------


class Conn:
    """One real WebSocket connection (lib "aiohttp" or "websockets"). Every frame it
    receives is checked against the outbound schemas, and, per session, its seq must be the
    one after the previous (from 1 on a session created here, from last_seq + 1 after a
    reconnect), with event_id "<sid>:<seq>": a gap or a repeat fails at once."""

    def __init__(self, label: str, lib: str) -> None:
        self.label = label
        self.lib = lib
        self.events: list[Event] = []
        self.next_seq: dict[str, int] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ws: Any = None

    @classmethod
    async def open(cls, url: str, lib: str, label: str) -> Conn:
        conn = cls(label, lib)
        if lib == "aiohttp":
            conn._http = aiohttp.ClientSession()
            try:
                conn._ws = await conn._http.ws_connect(url)
            except BaseException:
                await conn._http.close()
                raise
        else:
            # max_queue=None: frames a test leaves unread must not stop the library from
            # reading the socket, or its close handshake waits for close_timeout.
            conn._ws = await websockets_connect(
                url, open_timeout=5, close_timeout=2, max_size=None, max_queue=None, proxy=None
            )
        hello = await conn.recv()
        assert hello["event"] == "system.connected", hello
        return conn

    async def send(self, message: Event) -> None:
        text = json.dumps(message)
        if self.lib == "aiohttp":
            await self._ws.send_str(text)
        else:
            await self._ws.send(text)

    async def _text(self, timeout: float) -> str:
        if self.lib == "aiohttp":
            msg = await self._ws.receive(timeout=timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"{self.label}: connection closed: {msg!r}")
            return msg.data
        try:
            async with asyncio.timeout(timeout):
                data = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise AssertionError(f"{self.label}: connection closed: {exc!r}") from exc
        assert isinstance(data, str), f"{self.label}: a binary frame: {data!r}"
        return data

    async def recv(self, timeout: float = 5.0) -> Event:
        event = json.loads(await self._text(timeout))
        PROTOCOL.check_outbound(event)
        if "seq" in event:
            sid, seq = event["session_id"], event["seq"]
            expected = self.next_seq.get(sid, 1)
            assert seq == expected, (
                f"{self.label}: session {sid}: seq {seq} where {expected} was due "
                f"(a gap or a repeat): {event}"
            )
            assert event["event_id"] == f"{sid}:{seq}", event
            self.next_seq[sid] = seq + 1
        self.events.append(event)
        return event

    async def until(self, match: Callable[[Event], bool], timeout: float, what: str) -> Event:
        """Receive until an event matches; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.label}: no {what} within {timeout} s; last events: {self.tail()}"
                )
            with contextlib.suppress(TimeoutError):
                event = await self.recv(left)
                if match(event):
                    return event

    async def expect(self, name: str, timeout: float = 10.0, **fields: Any) -> Event:
        def match(event: Event) -> bool:
            return event["event"] == name and all(event.get(k) == v for k, v in fields.items())

        return await self.until(match, timeout, f"{name} {fields or ''}")

    async def error(self, code: str, timeout: float = 10.0, **fields: Any) -> Event:
        event = await self.expect("system.error", timeout, **fields)
        assert event["metadata"]["code"] == code, event
        return event

    async def quiet(self, duration: float) -> list[Event]:
        """Everything that arrives in the next `duration` seconds."""
        got: list[Event] = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    async def terminal(self, sid: str, timeout: float = 10.0) -> Event:
        return await self.until(
            lambda e: e.get("session_id") == sid and e["event"] in TERMINAL,
            timeout,
            f"terminal event of {sid}",
        )

    async def piece(self, sid: str, index: int, timeout: float = 10.0) -> Event:
        """Wait for streamed piece "<index>" of session `sid`."""
        return await self.expect(
            "agent.partial_answer", timeout, session_id=sid, content=f"<{index}>"
        )

    async def create(self, agent: str = "cluster") -> str:
        await self.send({"event": "user.create_session", "content": {"agent": agent}})
        event = await self.until(
            lambda e: e["event"] in ("agent.session_created", "system.error"), 10, "a session"
        )
        assert event["event"] == "agent.session_created", f"{self.label}: {event}"
        return event["session_id"]

    async def reconnect(self, sid: str, last_seq: int, timeout: float = 10.0) -> Event:
        """Attach `sid` here: its events after last_seq must follow, then the
        session_resumed of this reconnect (the replay may hold those of earlier reconnects:
        this one says this last_seq, and that it replayed the events that came before it)."""
        self.next_seq[sid] = last_seq + 1
        await self.send(
            {"event": "user.reconnect", "session_id": sid, "content": {"last_seq": last_seq}}
        )
        replayed = 0

        def ours(event: Event) -> bool:
            nonlocal replayed
            if event.get("session_id") != sid or "seq" not in event:
                return False
            meta = event.get("metadata") or {}
            if (
                event["event"] == "agent.session_resumed"
                and meta.get("last_seq") == last_seq
                and meta.get("replayed") == replayed
            ):
                return True
            replayed += 1
            return False

        return await self.until(ours, timeout, f"session_resumed of {sid} from {last_seq}")

    async def say(self, sid: str, text: str) -> None:
        await self.send(message(sid, text))

    async def turn(self, sid: str, text: str, timeout: float = 10.0) -> Event:
        await self.say(sid, text)
        return await self.terminal(sid, timeout)

    def last_seq(self, sid: str) -> int:
        return self.next_seq.get(sid, 1) - 1

    def of(self, sid: str) -> list[Event]:
        """The session events (with a seq) this connection received, in order."""
        return [e for e in self.events if e.get("session_id") == sid and "seq" in e]

    def tail(self, count: int = 8) -> list[str]:
        return [f"{e['event']}#{e.get('seq')}:{str(e.get('content'))[:40]}" for e in self.events][
            -count:
        ]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()


def message(sid: str, text: str) -> Event:
    return {"event": "user.message", "session_id": sid, "content": text}


def response(sid: str, step_id: str, approved: bool) -> Event:
    return {
        "event": "user.response",
        "session_id": sid,
        "step_id": step_id,
        "content": {"approved": approved},
    }


def assert_exactly_once(events: list[Event]) -> None:
    """The events of one session a client got over its successive connections: every seq
    from 1 to the last, each once, in order."""
    seqs = [e["seq"] for e in events]
    repeated = sorted({s for s in seqs if seqs.count(s) > 1})
    assert not repeated, f"seqs received more than once: {repeated}"
    missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
    assert not missing, f"seqs never received: {missing}"
    assert seqs == sorted(seqs), f"out of order: {seqs}"


def pieces(events: list[Event]) -> list[str]:
    return [e["content"] for e in events if e["event"] == "agent.partial_answer"]


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else None


async def metrics(node: Node) -> str:
    status, body = await node.get("/metrics")
    assert status == 200, (status, body)
    return body


async def turns_running(node: Node) -> float | None:
    return metric(await metrics(node), "myagent_ws_turns_running")


async def wait_status(node: Node, path: str, status: int, timeout: float) -> float:
    """Poll `path` until it answers `status`; how long that took."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        try:
            last = await node.get(path, timeout=2.0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = exc
        else:
            if last[0] == status:
                return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"node {node.index} {path}: no {status} in {timeout} s (last: {last!r})")


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll the async `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


async def _equals(value: Any, expected: Any) -> bool:
    """Whether the awaitable `value` gives `expected` (a check for wait_for)."""
    return (await value) == expected


def tool_runs(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def start_cluster(cluster_factory: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """start_cluster(*more_flags, size=3, store=...) -> a ready Cluster of processes serving
    the cluster agent with a 3 s node lease, under a fresh Redis prefix. Their output is
    printed at teardown (pytest shows it only for a failing test)."""
    started: list[Cluster] = []

    async def start(*flags: str, size: int = 3, **options: Any) -> Cluster:
        cluster = await cluster_factory(
            size,
            args=(CLUSTER_AGENT, "--node-lease-s", str(LEASE_S), *flags),
            env={"CLUSTER_TOOL_LOG": str(tmp_path / "tools.log")},
            **options,
        )
        started.append(cluster)
        await cluster.wait_ready(15)
        return cluster

    yield start
    for cluster in started:
        print(cluster.outputs())


@pytest.fixture
async def open_conn() -> AsyncIterator[Any]:
    """open_conn(node_or_url, lib) -> a Conn that got system.connected; closed after the test."""
    opened: list[Conn] = []
    count = 0

    async def open_(target: Any, lib: str = "aiohttp") -> Conn:
        nonlocal count
        count += 1
        where = target if isinstance(target, str) else f"node{target.index}"
        url = (target if isinstance(target, str) else target.url) + "/"
        conn = await Conn.open(url, lib, f"conn{count}@{where}/{lib}")
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


# --- 1. a client moving between processes mid-turn -------------------------------------------


async def test_a_client_that_hops_nodes_mid_turn_gets_every_event_exactly_once(
    start_cluster, open_conn
):
    """The turn runs on node 0; the client leaves after piece <5>, reconnects on node 1,
    leaves again after <20> and reconnects on node 2: over the three connections every seq
    1..N arrives once, in order (each piece once), each reconnect is acknowledged with a
    session_resumed that says from where, and the final answer arrives."""
    cluster = await start_cluster()
    first = await open_conn(cluster[0], "aiohttp")
    sid = await first.create()
    await first.say(sid, "stream 40 0.03")
    await first.piece(sid, 5)
    await first.close()

    second = await open_conn(cluster[1], "websockets")
    resumed = await second.reconnect(sid, first.last_seq(sid))
    assert resumed["metadata"]["last_seq"] == first.last_seq(sid), resumed
    assert resumed["metadata"]["pending_confirm"] == [], resumed
    assert "replay_gap" not in resumed["metadata"], resumed
    await second.piece(sid, 20)
    await second.close()

    third = await open_conn(cluster[2], "aiohttp")
    resumed = await third.reconnect(sid, second.last_seq(sid))
    assert resumed["metadata"]["last_seq"] == second.last_seq(sid), resumed
    final = await third.terminal(sid)
    assert (final["event"], final["content"]) == ("agent.final_answer", "streamed 40"), final

    got = first.of(sid) + second.of(sid) + third.of(sid)
    assert_exactly_once(got)
    assert pieces(got) == [f"<{i}>" for i in range(40)]
    assert [e["event"] for e in got].count("agent.session_resumed") == 2
    assert [e["event"] for e in got if e["event"] in TERMINAL] == ["agent.final_answer"]


# --- 2. cancel from another process ----------------------------------------------------------


async def test_cancel_on_another_node_stops_the_turn_once_and_the_next_turn_runs(
    start_cluster, open_conn
):
    """The turn streams on node 0; user.cancel arrives on node 1. Both connections get
    exactly one agent.interrupted (the same seq), nothing streams after it, node 0 stops
    running the turn, and the next message (on node 0, where it ran) completes."""
    cluster = await start_cluster()
    runner = await open_conn(cluster[0], "websockets")
    sid = await runner.create()
    await runner.say(sid, "stream 200 0.03")  # 6 s unless stopped
    await runner.piece(sid, 3)
    other = await open_conn(cluster[1], "aiohttp")
    await other.reconnect(sid, runner.last_seq(sid))
    await other.send({"event": "user.cancel", "session_id": sid})

    ended_there = await other.terminal(sid, 5)
    ended_here = await runner.terminal(sid, 5)
    assert ended_there["event"] == ended_here["event"] == "agent.interrupted", ended_here
    assert ended_there["seq"] == ended_here["seq"]
    await asyncio.gather(runner.quiet(0.5), other.quiet(0.5))
    for conn in (runner, other):
        got = conn.of(sid)
        kinds = names(got)
        assert kinds.count("agent.interrupted") == 1, (conn.label, conn.tail())
        after = got[kinds.index("agent.interrupted") + 1 :]
        assert not after, f"{conn.label}: events after agent.interrupted: {after}"
    await wait_for(
        lambda: _equals(turns_running(cluster[0]), 0.0), 3, "node 0 stopped the cancelled turn"
    )

    answer = await runner.turn(sid, "after the cancel")
    assert answer["event"] == "agent.final_answer", answer
    assert answer["content"].endswith("after the cancel"), answer
    seen_there = await other.terminal(sid)
    assert seen_there["seq"] == answer["seq"]


# --- 3. approval from another process --------------------------------------------------------


async def test_a_confirmation_answered_on_another_node_runs_the_tool_once(
    start_cluster, open_conn, tmp_path
):
    """The question is asked by the turn on node 0. A reconnect on node 2 while it waits
    gets pending_confirm [step] and the same question again (same step_id, a new seq).
    Nodes 1 and 2 then answer at the same moment: exactly one of them gets
    confirm_not_pending, a later answer too, and the tool runs once, in node 0's process."""
    cluster = await start_cluster()
    tools = tmp_path / "tools.log"
    asker = await open_conn(cluster[0], "aiohttp")
    sid = await asker.create()
    await asker.say(sid, "book table")
    question = await asker.expect("agent.user_confirm", session_id=sid)
    step = question["step_id"]

    third = await open_conn(cluster[2], "websockets")
    resumed = await third.reconnect(sid, 0)  # everything from the start, then the question
    assert resumed["metadata"]["pending_confirm"] == [step], resumed
    assert resumed["metadata"]["replayed"] == resumed["seq"] - 1, resumed
    again = await third.until(lambda e: "seq" in e, 5, "the question asked again")
    assert (again["event"], again["step_id"]) == ("agent.user_confirm", step), again
    assert again["seq"] == resumed["seq"] + 1 > question["seq"], (question, again)
    assert again["content"] == question["content"]

    second = await open_conn(cluster[1], "aiohttp")
    resumed = await second.reconnect(sid, asker.last_seq(sid))
    assert resumed["metadata"]["pending_confirm"] == [step], resumed
    await second.expect("agent.user_confirm", 5, step_id=step)
    assert tool_runs(tools) == [], "the tool ran before it was approved"

    await asyncio.gather(
        second.send(response(sid, step, True)), third.send(response(sid, step, True))
    )
    answered = await asyncio.gather(second.quiet(1.5), third.quiet(1.5))
    refused = [
        e
        for got in answered
        for e in got
        if e["event"] == "system.error" and e["metadata"]["code"] == "confirm_not_pending"
    ]
    assert len(refused) == 1, f"one of two racing answers must be refused: {answered}"
    assert refused[0]["step_id"] == step, refused

    await second.send(response(sid, step, False))
    late = await second.error("confirm_not_pending", 5)
    assert late["step_id"] == step and late["session_id"] == sid, late

    final = await asker.terminal(sid)
    assert (final["event"], final["content"]) == ("agent.final_answer", "done: booked table")
    await asyncio.sleep(0.5)  # a second run would show up by now
    runs = tool_runs(tools)
    assert runs == [f"{cluster[0].proc.pid} table"], f"tool runs: {runs}"
    results = [e for e in asker.of(sid) if e["event"] == "agent.tool_result"]
    assert [r["metadata"]["status"] for r in results] == ["success"], results


# --- 4. a process killed mid-turn --------------------------------------------------------------


async def test_kill_9_of_the_node_running_a_turn_ends_it_with_node_lost_and_the_session_goes_on(
    start_cluster, open_conn
):
    """Node 0 runs a turn and is SIGKILLed. A client on node 1 gets agent.error node_lost
    within node_lease_s (+1 s); what it had received stays in the log (a reconnect on
    node 2 from seq 0 replays the same events, gapless); the next turn runs on node 1 with
    the memory of the turn before."""
    cluster = await start_cluster()
    runner = await open_conn(cluster[0], "websockets")
    sid = await runner.create()
    first = await runner.turn(sid, "remember me")
    assert first["content"] == "remember me", first
    watcher = await open_conn(cluster[1], "aiohttp")
    await watcher.reconnect(sid, runner.last_seq(sid))
    await runner.say(sid, "stream 400 0.05")  # 20 s: it can only end by the kill
    await watcher.piece(sid, 2)

    killed_at = time.monotonic()
    cluster.kill(0)
    assert await cluster[0].wait_exit(5) == -signal.SIGKILL
    lost = await watcher.terminal(sid, LEASE_S + 5)
    took = time.monotonic() - killed_at
    assert lost["event"] == "agent.error", lost
    assert lost["metadata"]["code"] == "node_lost", lost
    assert took <= LEASE_S + 1, f"node_lost came {took:.2f} s after the kill"

    late = await open_conn(cluster[2], "websockets")
    resumed = await late.reconnect(sid, 0)
    assert "replay_gap" not in resumed["metadata"], resumed
    replayed = {e["seq"]: e for e in late.of(sid)}
    for event in watcher.of(sid):
        kept = replayed.get(event["seq"])
        assert kept is not None, (
            f"seq {event['seq']} is not in the log any more: watcher got {watcher.tail(30)}, "
            f"a reconnect from 0 on node 2 got {late.tail(30)}"
        )
        assert (kept["event"], kept.get("content")) == (event["event"], event.get("content"))
    assert_exactly_once(late.of(sid))

    answer = await watcher.turn(sid, "still there?")
    assert answer["event"] == "agent.final_answer", answer
    assert "remember me" in answer["content"], answer
    assert answer["content"].endswith("still there?"), answer
    assert (await late.terminal(sid))["seq"] == answer["seq"]


# --- 5. one turn per session, cluster-wide -----------------------------------------------------


async def test_a_message_on_another_node_while_a_turn_runs_is_refused_session_busy(
    start_cluster, open_conn
):
    """on_busy=reject (the default): a user.message on node 1, and one on node 2, while
    node 0 runs the session's turn get session_busy; the running turn is not disturbed
    (one terminal, its own answer), and a message after it runs."""
    cluster = await start_cluster()
    runner = await open_conn(cluster[0], "aiohttp")
    sid = await runner.create()
    await runner.say(sid, "stream 40 0.03")
    await runner.piece(sid, 1)
    for index, lib in ((1, "websockets"), (2, "aiohttp")):
        other = await open_conn(cluster[index], lib)
        await other.reconnect(sid, runner.last_seq(sid))
        await other.say(sid, f"me too from node {index}")
        refused = await other.error("session_busy", 5)
        assert refused["session_id"] == sid, refused

    final = await runner.terminal(sid)
    assert (final["event"], final["content"]) == ("agent.final_answer", "streamed 40"), final
    await runner.quiet(0.3)
    assert [e["event"] for e in runner.of(sid) if e["event"] in TERMINAL] == ["agent.final_answer"]
    assert (await other.terminal(sid))["seq"] == final["seq"]  # node 2 saw it end too
    answer = await other.turn(sid, "now me")
    assert answer["content"] == "stream 40 0.03 | now me", answer


async def test_with_on_busy_queue_a_message_on_another_node_runs_after_the_turn(
    start_cluster, open_conn
):
    """on_busy=queue on every node: the message sent on node 1 while node 0 runs the turn
    is queued (system.notice metadata.queued 1), then runs after it: two final answers, in
    order, seen alike on both nodes, the second remembering the first."""
    cluster = await start_cluster("--on-busy", "queue")
    runner = await open_conn(cluster[0], "websockets")
    sid = await runner.create()
    await runner.say(sid, "stream 30 0.03")
    await runner.piece(sid, 1)
    other = await open_conn(cluster[1], "aiohttp")
    await other.reconnect(sid, runner.last_seq(sid))
    await other.say(sid, "queued words")
    notice = await other.expect("system.notice", 5, session_id=sid)
    assert notice["metadata"]["queued"] == 1, notice

    for conn in (runner, other):
        first = await conn.terminal(sid)
        second = await conn.terminal(sid)
        assert (first["event"], first["content"]) == ("agent.final_answer", "streamed 30")
        assert second["event"] == "agent.final_answer", second
        assert second["content"] == "stream 30 0.03 | queued words", second
        assert first["seq"] < second["seq"]
    await runner.quiet(0.3)
    assert [e["content"] for e in runner.of(sid) if e["event"] in TERMINAL] == [
        "streamed 30",
        "stream 30 0.03 | queued words",
    ]


# --- 6. memory follows the session -------------------------------------------------------------


async def test_memory_moves_with_the_session_across_three_nodes(start_cluster, open_conn):
    """Three turns, each on another node (the client moving between them): each answer
    lists every message so far, so the conversation memory travels through Redis."""
    cluster = await start_cluster()
    conns: list[Conn] = []
    sid = ""
    for index, (lib, text) in enumerate(
        (("aiohttp", "one"), ("websockets", "two"), ("aiohttp", "three"))
    ):
        conn = await open_conn(cluster[index], lib)
        if conns:
            await conn.reconnect(sid, conns[-1].last_seq(sid))
        else:
            sid = await conn.create()
        answer = await conn.turn(sid, text)
        assert answer["event"] == "agent.final_answer", answer
        conns.append(conn)
        await conn.close()
    answers = [e["content"] for c in conns for e in c.of(sid) if e["event"] in TERMINAL]
    assert answers == ["one", "one | two", "one | two | three"]
    assert_exactly_once([e for c in conns for e in c.of(sid)])


async def test_a_burst_of_events_from_one_node_reaches_another_node_whole_and_in_order(
    start_cluster, open_conn
):
    """600 pieces streamed with no pause: the running node appends them in batches (at most
    128 events per call), and a client on another node gets each once, in order."""
    cluster = await start_cluster()
    runner = await open_conn(cluster[0], "aiohttp")
    sid = await runner.create()
    watcher = await open_conn(cluster[1], "websockets")
    await watcher.reconnect(sid, 0)
    answer = await runner.turn(sid, "stream 600 0")
    assert answer["content"] == "streamed 600", answer
    final = await watcher.until(lambda e: e["event"] in TERMINAL, 15, "the final answer")
    assert final["seq"] == answer["seq"], (final, answer)
    assert pieces(watcher.of(sid)) == [f"<{i}>" for i in range(600)]
    assert_exactly_once(watcher.of(sid))


async def test_two_sessions_keep_their_own_memory_and_events_across_nodes(start_cluster, open_conn):
    """Two sessions, each moved to the node where the other ran its turn: each answer
    lists only its own messages, and no connection gets an event of the other session."""
    cluster = await start_cluster()
    a = await open_conn(cluster[0], "aiohttp")
    b = await open_conn(cluster[1], "websockets")
    sa, sb = await a.create(), await b.create()
    assert (await a.turn(sa, "alpha"))["content"] == "alpha"
    assert (await b.turn(sb, "beta"))["content"] == "beta"
    a2 = await open_conn(cluster[1], "aiohttp")
    b2 = await open_conn(cluster[0], "websockets")
    await a2.reconnect(sa, a.last_seq(sa))
    await b2.reconnect(sb, b.last_seq(sb))
    assert (await a2.turn(sa, "alpha 2"))["content"] == "alpha | alpha 2"
    assert (await b2.turn(sb, "beta 2"))["content"] == "beta | beta 2"
    for conn, other in ((a, sb), (a2, sb), (b, sa), (b2, sa)):
        assert not [e for e in conn.events if e.get("session_id") == other], conn.label


async def test_the_log_is_bounded_expires_and_a_replay_past_it_names_the_gap(start_cluster):
    """--replay-buffer 50: the session's Redis log keeps its newest 50 events, every key of
    the session expires (session_ttl_s), and a reconnect from seq 0 on another node gets
    those 50, in order, with metadata.replay_gap naming the rest."""
    import redis.asyncio as aioredis

    cluster = await start_cluster("--replay-buffer", "50", "--session-ttl-s", "60")
    async with websockets_connect(cluster[0].url + "/", max_queue=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"event": "user.create_session"}))
        sid = json.loads(await ws.recv())["session_id"]
        await ws.send(json.dumps(message(sid, "stream 120 0")))
        last = 0
        async with asyncio.timeout(15):
            while True:
                event = json.loads(await ws.recv())
                last = event.get("seq", last)
                if event["event"] in TERMINAL:
                    break
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() for k in await client.keys(f"{cluster.prefix}s:{sid}*")]
        assert f"{cluster.prefix}s:{sid}:log" in keys, keys
        assert await client.xlen(f"{cluster.prefix}s:{sid}:log") == 50
        for key in keys:
            assert 0 < await client.pttl(key) <= 60_000, key
    finally:
        await client.aclose()
    async with websockets_connect(cluster[1].url + "/", max_queue=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"event": "user.reconnect", "session_id": sid}))
        seqs = []
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await ws.recv())
                if event["event"] == "agent.session_resumed":
                    break
                seqs.append(event["seq"])
    assert seqs == list(range(last - 49, last + 1))
    assert event["metadata"]["replay_gap"] == {"from": 1, "to": last - 50}, event


# --- 7. operator endpoints -----------------------------------------------------------------------


async def test_metrics_show_the_running_turn_on_its_node_and_health_names_each_node(
    start_cluster, open_conn
):
    """While node 1 runs a turn its /metrics says myagent_ws_turns_running 1.0 and the
    others 0.0 (back to 0.0 after it); every node exposes myagent_ws_stream_lag_seconds and
    myagent_ws_store_errors_total (0 on a healthy cluster); /health "node" differs per
    process."""
    cluster = await start_cluster()
    ids = [node.node_id for node in cluster]
    assert all(ids) and len(set(ids)) == 3, ids
    for node in cluster:  # the banner says where the sessions live
        assert f"sessions: Redis at 127.0.0.1:6379/0, keys {cluster.prefix}*" in node.output()

    conn = await open_conn(cluster[1], "websockets")
    sid = await conn.create()
    await conn.say(sid, "stream 60 0.03")
    await conn.piece(sid, 1)
    running = [await turns_running(node) for node in cluster]
    assert running == [0.0, 1.0, 0.0], running
    final = await conn.terminal(sid)
    assert final["content"] == "streamed 60", final
    await wait_for(lambda: _equals(turns_running(cluster[1]), 0.0), 3, "turns_running back to 0")

    for node in cluster:
        text = await metrics(node)
        assert re.search(r"^myagent_ws_stream_lag_seconds_count ", text, re.M), text
        assert metric(text, "myagent_ws_store_errors_total") == 0.0, (node.index, text)
        assert "# TYPE myagent_ws_redis_errors_total counter" in text, text
        status, health = await node.get("/health")
        assert status == 200 and health["node"] == node.node_id, health


# --- 8. nginx round robin in front ---------------------------------------------------------------


async def connected_node(cluster: Cluster) -> int:
    """The index of the one node that has a connection (per /health), once exactly one has."""

    async def which() -> int | None:
        counts = [(await node.get("/health"))[1]["connections"] for node in cluster]
        return counts.index(1) + 1 if sorted(counts) == [0, 0, 1] else None

    return await wait_for(which, 5, "exactly one connection in the cluster") - 1


async def test_through_nginx_a_client_that_reconnects_mid_turn_gets_every_event_once(
    start_cluster, nginx_factory, open_conn
):
    """Through the real deploy/nginx.conf: the client connects, starts a turn, drops the
    connection mid-turn and reconnects through nginx twice, each time landing on another
    process (round robin, no stickiness); it gets every event once and the answer."""
    cluster = await start_cluster()
    nginx = await nginx_factory(cluster)
    conns: list[Conn] = []
    landed: list[int] = []
    sid = ""
    hops = (("websockets", 8), ("aiohttp", 25), ("websockets", None))
    for hop, (lib, leave_after) in enumerate(hops):
        conn = await open_conn(nginx.url, lib)
        landed.append(await connected_node(cluster))
        if hop == 0:
            sid = await conn.create()
            await conn.say(sid, "stream 50 0.03")
        else:
            await conn.reconnect(sid, conns[-1].last_seq(sid))
        conns.append(conn)
        if leave_after is None:
            final = await conn.terminal(sid)
            assert final["content"] == "streamed 50", final
        else:
            await conn.piece(sid, leave_after)
        await conn.close()
    assert len(set(landed)) == 3, f"nginx sent the connections to nodes {landed}"
    got = [e for c in conns for e in c.of(sid)]
    assert_exactly_once(got)
    assert pieces(got) == [f"<{i}>" for i in range(50)]


# --- 9. a Redis outage (a private redis-server) -----------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a free port, nothing saved: stopping it is an
    outage, starting it again an empty Redis."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = workdir / "private-redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ping(self) -> bool:
        return redis_ping(self.url, 0.5)

    def _spawn(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    async def start(self, timeout: float = 10.0) -> None:
        """Start it (again, empty) and wait until it answers PING."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"redis-server exited: {self.log_path.read_text()}")
            if self.ping():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"redis-server did not answer PING in {timeout} s")

    def stop(self) -> None:
        """SIGKILL, and wait for it to be gone (bounded)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)


async def concurrent_turns(conn: Conn, sids: list[str], text: str) -> list[str]:
    """Send `text` to every session at once; their final answers, in the order of `sids`.
    Any system.error (or another terminal event) fails, saying what came instead."""
    for sid in sids:
        await conn.say(sid, text)
    ends: dict[str, Event] = {}

    def ended(event: Event) -> bool:
        if event.get("session_id") in sids and (event["event"] in TERMINAL or "seq" not in event):
            ends.setdefault(event["session_id"], event)
        return len(ends) == len(sids)

    await conn.until(ended, 10, f"an answer to {text!r} in each of {len(sids)} sessions")
    failed = {sid: e for sid, e in ends.items() if e["event"] != "agent.final_answer"}
    assert not failed, f"{conn.label}: user.message {text!r} got, instead of an answer: {failed}"
    return [ends[sid]["content"] for sid in sids]


@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    redis = PrivateRedis(tmp_path)
    try:
        yield redis
    finally:
        redis.stop()


async def test_a_redis_outage_is_survived_and_sessions_work_again_after_it(
    private_redis, start_cluster, open_conn
):
    """Two nodes on a private Redis, each first running four turns at once (so each
    process's Redis client holds several pooled connections when Redis goes).
    (a) Redis killed: /ready turns 503 on both, a user.message on either gets system.error
    internal_error naming the session store, the connection stays open and answers, no
    process crashes (/health 200). (b) Redis started again, empty: /ready is 200 again
    within a few seconds, and from then on new sessions work end to end on both nodes,
    with no error: four created and answered at once on each node, one of them continued on
    the other node (with memory, seen live on both), on the same connections as before."""
    await private_redis.start()
    cluster = await start_cluster(size=2, store=private_redis.url)
    try:
        conns = [
            await open_conn(cluster[0], "aiohttp"),
            await open_conn(cluster[1], "websockets"),
        ]
        sids = []
        for conn in conns:  # turns at once: each node's Redis client pools connections
            several = [await conn.create() for _ in range(4)]
            answers = await concurrent_turns(conn, several, "stream 5 0.01")
            assert answers == ["streamed 5"] * 4, answers
            sids.append(several[0])

        private_redis.stop()
        for node in cluster:
            await wait_status(node, "/ready", 503, 10)
        for conn, sid in zip(conns, sids, strict=True):
            await conn.say(sid, "during the outage")
            refused = await conn.error("internal_error", 20)
            assert "session store" in refused["content"], refused
            await conn.send({"event": "user.list_agents"})
            agents = await conn.expect("system.agents", 5)
            assert [a["name"] for a in agents["content"]] == ["cluster"], agents
        for node in cluster:
            assert node.alive(), f"node {node.index} exited:\n{node.output()}"
            status, health = await node.get("/health")
            assert status == 200 and health["status"] == "ok", health
            assert (await node.get("/ready"))[0] == 503
            _, text = await node.get("/metrics")
            failed = re.findall(r'^myagent_ws_redis_errors_total\{call="\w+"\} (\S+)$', text, re.M)
            assert sum(map(float, failed)) > 0, text  # the outage is counted

        await private_redis.start()
        for node in cluster:
            took = await wait_status(node, "/ready", 200, 10)
            assert took < 8, f"node {node.index} ready again only after {took:.1f} s"
        for here, there in ((conns[0], conns[1]), (conns[1], conns[0])):
            several = [await here.create() for _ in range(4)]
            answers = await concurrent_turns(here, several, "hello again")
            assert answers == ["hello again"] * 4, answers
            sid = several[0]
            await there.reconnect(sid, 0)
            [answer] = await concurrent_turns(there, [sid], "and on the other node")
            assert answer == "hello again | and on the other node"
            seen_here = await here.terminal(sid)  # live, through node `here`'s tail of the log
            assert seen_here["content"] == answer, seen_here
            assert_exactly_once(here.of(sid))
            assert_exactly_once(there.of(sid))
        assert all(node.alive() for node in cluster)
    finally:
        # Its keys live in the private Redis, which goes away with them.
        with contextlib.suppress(Exception):
            await cluster.stop()
