"""The core's promises under faults: a quick cancel, a stubborn tool, a failing or slow
store, a burst, a flood of replay, hostile input. Each test here failed before its fix."""

from __future__ import annotations

import ast
import asyncio
import json

from myagent_ws.keys import METRICS, SESSIONS
from myagent_ws.store import MemoryStore
from tests.agents import (
    WaitTool,
    burst_agent,
    counting_agent,
    key,
    stubborn_agent,
    waiting_agent,
)
from tests.client import TERMINAL
from tests.conftest import ROOT


async def test_cancel_right_after_message_ends_the_turn_with_interrupted(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    client = await connect(server)
    sid = await client.create_session()
    for _ in range(5):  # the cancel lands before, at or after the turn's first step
        await client.send(
            json.dumps({"event": "user.message", "session_id": sid, "content": key()})
            + "\n"  # (JSON allows trailing white space)
        )
        await client.send({"event": "user.cancel", "session_id": sid})
        events = await client.until_terminal(sid)
        assert events[-1]["event"] == "agent.interrupted"
        assert sum(e["event"] in TERMINAL for e in events) == 1
    counter = await serve(files=(), agents=(counting_agent(),))
    other = await connect(counter)
    sid = await other.create_session()
    await other.send({"event": "user.message", "session_id": sid, "content": "a"})
    await other.send({"event": "user.cancel", "session_id": sid})
    assert (await other.until_terminal(sid))[-1]["event"] == "agent.interrupted"
    assert (await other.turn(sid, "b"))[-1]["content"] == "1: b"  # the cancelled turn left no trace


async def test_a_tool_that_ignores_cancel_cannot_delay_the_interrupt_or_other_sessions(
    serve, connect
):
    server = await serve(files=(), agents=(stubborn_agent(), counting_agent()))
    client = await connect(server)
    stuck = await client.create_session("stubborn")
    other = await client.create_session("counter")
    gate = key()
    await client.send({"event": "user.message", "session_id": stuck, "content": gate})
    await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
    await client.send({"event": "user.cancel", "session_id": stuck})
    interrupted = await client.expect("agent.interrupted", timeout=1, session_id=stuck)
    # The reader is free: the other session answers while the tool still holds on.
    assert (await client.turn(other, "hi", timeout=2))[-1]["event"] == "agent.final_answer"
    # The next turn of the stuck session waits for the tool to let go, then runs; nothing
    # of the cancelled turn follows its agent.interrupted.
    second = key()
    WaitTool.gate(second).set()
    await client.send({"event": "user.message", "session_id": stuck, "content": second})
    await asyncio.sleep(0.2)
    WaitTool.gate(gate).set()
    events = await client.until_terminal(stuck)
    assert events[0]["seq"] == interrupted["seq"] + 1 and events[0]["event"] == "agent.thinking"
    assert all(gate not in str(e.get("content")) for e in events)
    assert events[-1]["event"] == "agent.final_answer" and second in events[-1]["content"]
    assert sum(e["event"] in TERMINAL for e in events) == 1


async def test_end_session_does_not_wait_for_a_stubborn_tool(serve, connect):
    server = await serve(files=(), agents=(stubborn_agent(),))
    client = await connect(server)
    sid = await client.create_session()
    gate = key()
    await client.send({"event": "user.message", "session_id": sid, "content": gate})
    await asyncio.wait_for(WaitTool.entered(gate).wait(), 5)
    await client.send({"event": "user.end_session", "session_id": sid})
    interrupted = await client.expect("agent.interrupted", timeout=1)
    end = await client.expect("agent.session_end", timeout=1)
    assert end["seq"] == interrupted["seq"] + 1 and end["metadata"]["reason"] == "ended"
    WaitTool.gate(gate).set()


class FailingStore(MemoryStore):
    """Keeps events, and fails (or stalls) on demand."""

    keeps_events = True

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.fail = False
        self.delay_s = delay_s
        self.logged: list[int] = []

    async def append_events(self, session_id: str, events: list[tuple[int, bytes]]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("store unreachable")
        self.logged.extend(seq for seq, _ in events)


async def test_store_failure_ends_the_turn_with_internal_error(serve, connect):
    store = FailingStore()
    server = await serve(files=(), agents=(waiting_agent(),), store=store)
    client = await connect(server)
    sid = await client.create_session()
    store.fail = True
    gate = key()
    await client.send({"event": "user.message", "session_id": sid, "content": gate})
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.error"
    assert events[-1]["metadata"]["code"] == "internal_error"
    assert "store" in events[-1]["content"] and "Traceback" not in events[-1]["content"]
    assert "myagent_ws_store_errors_total 1.0" in server.app[METRICS].render().decode()
    WaitTool.gate(gate).set()
    store.fail = False  # the session stays usable once the store is back
    gate = key()
    WaitTool.gate(gate).set()
    assert (await client.turn(sid, gate))[-1]["event"] == "agent.final_answer"


async def test_a_suspending_store_loses_no_seq_and_keeps_order_across_a_cancel(serve, connect):
    store = FailingStore(delay_s=0.01)
    server = await serve(files=(), agents=(waiting_agent(),), store=store)
    client = await connect(server)  # WsClient asserts every seq is the previous one + 1
    sid = await client.create_session()
    for _ in range(3):
        gate = key()
        await client.send({"event": "user.message", "session_id": sid, "content": gate})
        await client.expect("agent.tool_call", session_id=sid)
        await client.send({"event": "user.cancel", "session_id": sid})
        assert (await client.until_terminal(sid))[-1]["event"] == "agent.interrupted"
        WaitTool.gate(gate).set()
    await server.app[SESSIONS].sessions[sid].drain()
    assert store.logged == list(range(1, client.last_seq[sid] + 1))  # persisted in order


def test_runner_takes_an_agent_and_emit_not_a_session():
    tree = ast.parse((ROOT / "myagent_ws" / "runner.py").read_text("utf-8"))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "sessions" not in imported and "myagent_ws.sessions" not in imported


async def test_a_burst_of_thousands_of_events_reaches_a_reading_client(serve, connect):
    server = await serve(files=(), agents=(burst_agent(5000),))
    client = await connect(server)
    sid = await client.create_session()
    events = await client.turn(sid, "go", timeout=30)
    assert events[-1]["event"] == "agent.final_answer"
    assert sum(e["event"] == "agent.partial_answer" for e in events) == 5000


async def test_replay_of_full_buffers_is_paced_and_a_slow_reader_is_never_cut_off(serve, connect):
    server = await serve(
        files=(), agents=(burst_agent(700, size=500),), send_buffer_bytes=256 << 10
    )
    first = await connect(server)
    sessions = [await first.create_session() for _ in range(2)]
    for sid in sessions:
        await first.turn(sid, "go", timeout=30)
    await first.ws.close()
    # Two buffers of ~0.7 MB each to replay through a 256 KiB send buffer, read slowly.
    client = await connect(server)
    for sid in sessions:
        await client.reconnect(sid, last_seq=0)
    resumed = 0
    async with asyncio.timeout(60):
        while resumed < 2:
            event = await client.recv(timeout=10)
            resumed += event["event"] == "agent.session_resumed"
            if len(client.received) % 100 == 0:
                await asyncio.sleep(0.05)  # a slow reader, but a reader
    assert not client.ws.closed
    replayed = [e for e in client.received if e["event"] == "agent.partial_answer"]
    assert len(replayed) == 1400
    for sid in sessions:
        assert (await client.turn(sid, "again", timeout=30))[-1]["event"] == "agent.final_answer"


async def test_bad_acks_get_a_clear_error_and_no_traceback(serve, connect, caplog):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    for event_id in ("s_x:²", f"{sid}:٣", f"{sid}:", "no-colon", f"{sid}:1e3"):
        await client.send({"event": "user.ack", "content": {"last_event_id": event_id}})
        error = await client.error("schema_violation")
        assert error["metadata"]["path"] == "/content/last_event_id"
    assert "Traceback" not in caplog.text and "internal_error" not in caplog.text
    assert (await client.turn(sid, "Paris weather?"))[-1]["event"] == "agent.final_answer"


async def test_replies_never_echo_a_huge_client_string(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    huge = "z" * 500_000
    frames = [
        {"event": "user.message", "session_id": huge, "content": "hi"},
        {"event": "user.reconnect", "session_id": huge},
        {"event": "user.create_session", "content": {"agent": huge}},
        {"event": "user.create_session", "metadata": {"agent": huge}},
        {"event": "user.response", "session_id": sid, "step_id": huge, "content": {"approved": 1}},
        {
            "event": "user.response",
            "session_id": sid,
            "step_id": huge,
            "content": {"approved": True},
        },
        {"event": "user.cancel", "session_id": huge},
        {"event": "user.dance" + huge},
    ]
    for frame in frames:
        await client.send(frame)
        msg = await client.ws.receive(timeout=5)
        assert len(msg.data) < 2000, msg.data[:200]
        assert json.loads(msg.data)["event"] == "system.error"
