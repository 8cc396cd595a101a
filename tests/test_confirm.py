"""Human in the loop: a tool that needs approval asks with agent.user_confirm and runs at
most once, whatever arrives: approvals, rejections, silence, repeats, reconnects, cancels.

The server loads examples/booking_agent.py on the built-in offline model; each session's
BookTableTool keeps that session's bookings, the record that proves how often it ran.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from myagent import BaseTool, create_react_agent
from myagent.offline import OfflineModel
from myagent_ws.keys import SESSIONS
from tests.agents import bookings
from tests.client import WsClient, names
from tests.conftest import ASK, BOOKING


async def ask(client: WsClient, text: str = ASK) -> tuple[str, dict[str, Any]]:
    """A new session asked to book: returns it and its agent.user_confirm."""
    sid = await client.create_session()
    await client.send({"event": "user.message", "session_id": sid, "content": text})
    call = await client.expect("agent.tool_call")
    confirm = await client.recv()
    assert confirm["event"] == "agent.user_confirm"
    assert confirm["step_id"] == call["step_id"]
    return sid, confirm


def respond(sid: str, step_id: str, **content: Any) -> dict[str, Any]:
    return {"event": "user.response", "session_id": sid, "step_id": step_id, "content": content}


def error_codes(*clients: WsClient) -> list[str]:
    """The codes of every system.error these clients have received so far."""
    return [
        e["metadata"]["code"] for c in clients for e in c.received if e["event"] == "system.error"
    ]


async def test_approved_call_runs_once_and_the_turn_answers(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    meta = confirm["metadata"]
    assert meta["tool"] == "book_table" and meta["call_id"] == confirm["step_id"]
    assert meta["args"] == {"restaurant": "Luigi", "people": 2, "time": "19:30"}
    assert "book_table" in confirm["content"] and '"Luigi"' in confirm["content"]
    expires = datetime.fromisoformat(meta["expires_at"])
    assert 250 < (expires - datetime.fromisoformat(confirm["timestamp"])).total_seconds() <= 300
    assert bookings(server, sid) == []  # nothing runs before the answer

    await client.send(respond(sid, confirm["step_id"], approved=True))
    events = await client.until_terminal(sid)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["step_id"] == confirm["step_id"]
    assert result["metadata"]["status"] == "success" and "reason" not in result["metadata"]
    assert events[-1]["event"] == "agent.final_answer" and "booking #1" in events[-1]["content"]
    assert [b["restaurant"] for b in bookings(server, sid)] == ["Luigi"]


async def test_confirmed_is_a_synonym_of_approved(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    await client.send(respond(sid, confirm["step_id"], confirmed=True))
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.final_answer"
    assert len(bookings(server, sid)) == 1


async def test_rejected_call_does_not_run_and_the_model_hears_why(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    await client.send(respond(sid, confirm["step_id"], approved=False, feedback="too late"))
    events = await client.until_terminal(sid)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["metadata"]["status"] == "rejected"
    assert result["metadata"]["reason"] == "declined"
    assert "declined" in result["content"] and "too late" in result["content"]
    assert events[-1]["event"] == "agent.final_answer"
    assert bookings(server, sid) == []
    memory = server.app[SESSIONS].sessions[sid].agent.messages
    tool_message = next(m for m in memory if m["role"] == "tool")
    assert "declined" in tool_message["content"] and "too late" in tool_message["content"]


async def test_no_answer_in_time_is_a_rejection_with_reason_timeout(serve, connect):
    server = await serve(files=(BOOKING,), confirm_timeout_s=0.3)
    client = await connect(server)
    sid, confirm = await ask(client)
    events = await client.until_terminal(sid, timeout=5)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["metadata"]["status"] == "rejected"
    assert result["metadata"]["reason"] == "timeout"
    assert events[-1]["event"] == "agent.final_answer"
    assert bookings(server, sid) == []
    await client.send(respond(sid, confirm["step_id"], approved=True))  # too late
    late = await client.error("confirm_not_pending")
    assert late["session_id"] == sid
    assert bookings(server, sid) == []


async def test_waiting_for_a_person_does_not_count_against_the_turn_timeout(serve, connect):
    server = await serve(files=(BOOKING,), turn_timeout_s=0.5)
    client = await connect(server)
    sid, confirm = await ask(client)
    await asyncio.sleep(0.8)
    await client.send(respond(sid, confirm["step_id"], approved=True))
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.final_answer"
    assert len(bookings(server, sid)) == 1


async def test_pending_confirm_is_asked_again_after_a_reconnect(serve, connect):
    server = await serve(files=(BOOKING,))
    first = await connect(server)
    sid, confirm = await ask(first)
    # The client acked the question, so the replay buffer no longer holds it.
    await first.send(
        {"event": "user.ack", "session_id": sid, "content": {"last_seq": confirm["seq"]}}
    )
    await first.send({"event": "user.list_agents"})
    await first.expect("system.agents")
    assert server.app[SESSIONS].sessions[sid].buffer.first_seq > confirm["seq"]
    await first.ws.close()

    second = await connect(server)
    await second.reconnect(sid, confirm["seq"])
    resumed = await second.expect("agent.session_resumed")
    assert resumed["metadata"]["replayed"] == 0
    assert resumed["metadata"]["pending_confirm"] == [confirm["step_id"]]
    again = await second.recv()
    assert again["event"] == "agent.user_confirm" and again["seq"] == resumed["seq"] + 1
    assert again["step_id"] == confirm["step_id"]
    assert again["metadata"] == confirm["metadata"] and again["content"] == confirm["content"]

    await second.send(respond(sid, again["step_id"], approved=True))
    events = await second.until_terminal(sid)
    assert names(events).count("agent.tool_result") == 1
    assert events[-1]["event"] == "agent.final_answer"
    assert len(bookings(server, sid)) == 1


async def test_resumed_says_no_pending_confirm_when_there_is_none(serve, connect):
    server = await serve(files=(BOOKING,))
    first = await connect(server)
    sid = await first.create_session()
    await first.ws.close()
    second = await connect(server)
    await second.reconnect(sid, 0)
    resumed = await second.expect("agent.session_resumed")
    assert resumed["metadata"]["pending_confirm"] == []


async def test_a_repeated_approval_runs_the_tool_once(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    answer = respond(sid, confirm["step_id"], approved=True)
    await client.send(answer)
    await client.send(answer)
    events = await client.until_terminal(sid)
    assert error_codes(client) == ["confirm_not_pending"]
    assert events[-1]["event"] == "agent.final_answer"
    assert len(bookings(server, sid)) == 1
    # The connection and the session go on.
    events = await client.turn(sid, "hello")
    assert events[-1]["event"] == "agent.final_answer"


async def test_two_connections_approving_at_once_run_the_tool_once(serve, connect):
    server = await serve(files=(BOOKING,))
    first = await connect(server)
    sid, confirm = await ask(first)
    second = await connect(server)
    await second.reconnect(sid, confirm["seq"])
    again = await second.expect("agent.user_confirm")
    await asyncio.gather(
        first.send(respond(sid, confirm["step_id"], approved=True)),
        second.send(respond(sid, again["step_id"], approved=True)),
    )
    ends = await asyncio.gather(first.until_terminal(sid), second.until_terminal(sid))
    assert all(events[-1]["event"] == "agent.final_answer" for events in ends)
    assert error_codes(first, second) == ["confirm_not_pending"]
    assert len(bookings(server, sid)) == 1


async def test_cancel_while_waiting_interrupts_and_the_tool_never_runs(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    await client.send({"event": "user.cancel", "session_id": sid})
    events = await client.until_terminal(sid)
    assert names(events) == ["agent.interrupted"]
    await client.send(respond(sid, confirm["step_id"], approved=True))
    await client.error("confirm_not_pending")
    assert bookings(server, sid) == []
    # Memory is as before the turn, and the session runs its next turn.
    assert server.app[SESSIONS].sessions[sid].agent.messages == []
    events = await client.turn(sid, "hello")
    assert events[-1]["event"] == "agent.final_answer"


@pytest.mark.parametrize("first", ["approve", "cancel"])
async def test_an_approval_racing_a_cancel_runs_the_tool_at_most_once(serve, connect, first):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    approve = respond(sid, confirm["step_id"], approved=True)
    cancel = {"event": "user.cancel", "session_id": sid}
    for frame in [approve, cancel] if first == "approve" else [cancel, approve]:
        await client.send(frame)  # back to back
    events = await client.until_terminal(sid)
    await client.send({"event": "user.list_agents"})  # everything sent before this is in
    await client.expect("system.agents")
    ran = [e for e in events if e["event"] == "agent.tool_result"]
    assert len(bookings(server, sid)) == len(ran) <= 1
    codes = error_codes(client)
    if first == "cancel":
        assert names(events) == ["agent.interrupted"] and not ran
        assert codes == ["confirm_not_pending"]
    else:
        assert codes == [] and events[-1]["event"] in ("agent.interrupted", "agent.final_answer")


async def test_a_response_that_matches_nothing_is_confirm_not_pending(serve, connect):
    server = await serve(files=(BOOKING,))
    client = await connect(server)
    sid, confirm = await ask(client)
    await client.send(respond(sid, "call_nonexistent", approved=True))
    error = await client.error("confirm_not_pending")
    assert "call_nonexistent" in error["content"] and error["session_id"] == sid
    assert error["step_id"] == "call_nonexistent"
    # Still pending: the right answer still works.
    await client.send(respond(sid, confirm["step_id"], approved=True))
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.final_answer"
    assert len(bookings(server, sid)) == 1


class Delete(BaseTool):
    name = "delete_file"
    description = "Delete a file."
    parameters = {"type": "object", "properties": {"path": {"type": "string"}}}

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def execute(self, path: str = "x") -> str:
        self.deleted.append(path)
        return f"deleted {path}"


async def test_confirm_tools_asks_for_a_tool_without_the_class_attribute(serve, connect):
    agent = create_react_agent(
        "careful", tools=[Delete()], model=OfflineModel(), confirm_tools=["delete_file"]
    )
    server = await serve(files=(), agents=(agent,))
    client = await connect(server)
    sid, confirm = await ask(client, "delete the file notes.txt")
    assert confirm["metadata"]["tool"] == "delete_file"
    await client.send(respond(sid, confirm["step_id"], approved=False))
    events = await client.until_terminal(sid)
    assert events[-1]["event"] == "agent.final_answer"
    assert server.app[SESSIONS].sessions[sid].agent.tools[0].deleted == []
