"""Double-texting: a user.message while its session's turn runs, under each on_busy
policy. Every accepted message ends with exactly one terminal event, in order."""

from __future__ import annotations

from typing import Any

from myagent_ws.keys import SESSIONS
from tests.agents import WaitTool, waiting_agent
from tests.client import TERMINAL, WsClient, names

AGENT = "waiter"


async def start(client: WsClient, key: str) -> str:
    """A session whose first turn waits in its tool on gate `key`."""
    sid = await client.create_session(AGENT)
    await client.send({"event": "user.message", "session_id": sid, "content": key})
    await client.expect("agent.tool_call")
    return sid


def message(sid: str, text: str) -> dict[str, Any]:
    return {"event": "user.message", "session_id": sid, "content": text}


async def terminals(client: WsClient, sid: str, count: int) -> list[dict[str, Any]]:
    """The session's events until `count` terminal events have arrived."""
    events: list[dict[str, Any]] = []
    while sum(e["event"] in TERMINAL for e in events) < count:
        events.append(await client.recv())
    return [e for e in events if e.get("session_id") == sid]


async def test_reject_answers_session_busy_and_the_turn_goes_on(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), on_busy="reject")
    client = await connect(server)
    sid = await start(client, "r-1")
    await client.send(message(sid, "r-2"))
    busy = await client.error("session_busy")
    assert busy["session_id"] == sid
    WaitTool.gate("r-1").set()
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.final_answer"
    assert "r-1" in events[-1]["content"]
    assert (await client.turn(sid, "r-1"))[-1]["event"] == "agent.final_answer"


async def test_queue_runs_messages_in_order_each_with_one_terminal(serve, connect):
    server = await serve(
        files=(), agents=(waiting_agent(),), on_busy="queue", max_queued_messages=2
    )
    client = await connect(server)
    sid = await start(client, "q-1")
    for key in ("q-2", "q-3"):
        WaitTool.gate(key).set()
        await client.send(message(sid, key))
    first, second = await client.expect("system.notice"), await client.expect("system.notice")
    assert [first["metadata"]["queued"], second["metadata"]["queued"]] == [1, 2]
    assert first["session_id"] == sid and "Queued" in first["content"]
    await client.send(message(sid, "q-4"))  # past max_queued_messages
    assert "2 messages already wait" in (await client.error("session_busy"))["content"]

    WaitTool.gate("q-1").set()
    events = await terminals(client, sid, 3)
    ends = [e for e in events if e["event"] in TERMINAL]
    assert names(ends) == ["agent.final_answer"] * 3
    assert [e["content"] for e in ends] == [f"done: gate q-{n} opened" for n in (1, 2, 3)]
    # Each queued turn ran after the one before it ended, with the memory it left.
    memory = server.app[SESSIONS].sessions[sid].agent.messages
    assert [m["content"] for m in memory if m["role"] == "user"] == ["q-1", "q-2", "q-3"]
    assert not server.app[SESSIONS].sessions[sid].busy


async def test_cancel_with_a_queue_interrupts_the_turn_and_every_queued_message(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), on_busy="queue")
    client = await connect(server)
    sid = await start(client, "qc-1")
    for key in ("qc-2", "qc-3"):
        await client.send(message(sid, key))
        await client.expect("system.notice")
    await client.send({"event": "user.cancel", "session_id": sid})
    events = await terminals(client, sid, 3)
    assert names(events) == ["agent.interrupted"] * 3
    assert "queued" not in (events[0].get("metadata") or {})
    assert [e["metadata"]["queued"] for e in events[1:]] == [True, True]
    assert all("did not run" in e["content"] for e in events[1:])
    # None of them ran, and the session takes new messages.
    WaitTool.gate("qc-4").set()
    assert (await client.turn(sid, "qc-4"))[-1]["content"] == "done: gate qc-4 opened"
    memory = server.app[SESSIONS].sessions[sid].agent.messages
    assert [m["content"] for m in memory if m["role"] == "user"] == ["qc-4"]


async def test_ending_a_session_interrupts_its_queued_messages_before_session_end(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), on_busy="queue")
    client = await connect(server)
    sid = await start(client, "qe-1")
    await client.send(message(sid, "qe-2"))
    await client.expect("system.notice")
    await client.send({"event": "user.end_session", "session_id": sid})
    events = await terminals(client, sid, 2)
    events.append(await client.expect("agent.session_end"))
    assert names(events) == ["agent.interrupted", "agent.interrupted", "agent.session_end"]
    assert events[0]["metadata"]["reason"] == "ended"
    assert events[1]["metadata"] == {"queued": True, "reason": "ended"}


async def test_interrupt_ends_the_running_turn_then_runs_the_new_message(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), on_busy="interrupt")
    client = await connect(server)
    sid = await start(client, "i-1")
    WaitTool.gate("i-2").set()
    await client.send(message(sid, "i-2"))
    events = await terminals(client, sid, 2)
    ends = [e for e in events if e["event"] in TERMINAL]
    assert names(ends) == ["agent.interrupted", "agent.final_answer"]
    assert ends[1]["content"] == "done: gate i-2 opened"
    # The interrupted turn left nothing in memory.
    memory = server.app[SESSIONS].sessions[sid].agent.messages
    assert [m["content"] for m in memory if m["role"] == "user"] == ["i-2"]


async def test_while_draining_queued_messages_do_not_start_and_new_ones_are_refused(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),), on_busy="queue")
    client = await connect(server)
    sid = await start(client, "qd-1")
    await client.send(message(sid, "qd-2"))
    await client.expect("system.notice")
    server.app[SESSIONS].draining = True  # what SIGTERM does (tests/test_drain.py)
    await client.send(message(sid, "qd-3"))
    refused = await client.error("server_draining")
    assert refused["session_id"] == sid
    WaitTool.gate("qd-1").set()  # the running turn finishes inside the grace period
    events = await terminals(client, sid, 2)
    ends = [e for e in events if e["event"] in TERMINAL]
    assert names(ends) == ["agent.final_answer", "agent.interrupted"]
    assert ends[1]["metadata"] == {"queued": True, "reason": "shutdown"}
    assert not server.app[SESSIONS].sessions[sid].busy
