"""Sessions belong to the principal that created them: another principal that names one
gets system.error `forbidden` on every session event, keeps its connection, and changes
nothing; the owner goes on from any connection. In one process and across two processes
on Redis, with tickets issued by one process and redeemed by the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.client import WsClient, names, ticket
from tests.cluster import require_redis
from tests.conftest import CLUSTER_AGENT, TOKENS


@pytest.fixture
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tool.log"
    path.touch()
    monkeypatch.setenv("CLUSTER_TOOL_LOG", str(path))
    return path


def booked(tool_log: Path) -> str:
    """What the book tool ran, in every process (a few short lines)."""
    return tool_log.read_text(encoding="utf-8")


def bearer(name: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {TOKENS[name]}"}}


async def pending_booking(alice: WsClient) -> tuple[str, str]:
    """A session of alice's whose turn waits for approval: (session id, step id)."""
    sid = await alice.create_session("cluster")
    await alice.send({"event": "user.message", "session_id": sid, "content": "book a table"})
    asked = await alice.expect("agent.user_confirm", timeout=10)
    return sid, asked["step_id"]


async def refused_everything(bob: WsClient, sid: str, step_id: str) -> None:
    """Every session event bob can send about alice's session gets `forbidden`."""
    frames = [
        {"event": "user.reconnect", "session_id": sid, "content": {"last_seq": 0}},
        {"event": "user.message", "session_id": sid, "content": "book everything"},
        {"event": "user.cancel", "session_id": sid},
        {"event": "user.response", "session_id": sid, "step_id": step_id,
         "content": {"approved": True}},
        {"event": "user.end_session", "session_id": sid},
        {"event": "user.ack", "session_id": sid, "content": {"last_seq": 3}},
        {"event": "user.ack", "content": {"last_event_id": f"{sid}:3"}},
    ]  # fmt: skip
    for frame in frames:
        await bob.send(frame)
        error = await bob.error("forbidden")
        assert error["session_id"] == sid, frame
        assert "another principal" in error["content"]
    # bob never saw a frame of alice's session, and his connection still works
    assert all(e.get("session_id") in (None, sid) for e in bob.received)
    assert not [e for e in bob.received if e.get("seq")]
    own = await bob.create_session("cluster")
    assert names(await bob.turn(own, "hello"))[-1] == "agent.final_answer"


async def owner_goes_on(alice: WsClient, sid: str, step_id: str, tool_log: Path) -> None:
    """Nothing bob sent reached alice's session: the same question still waits, and her
    approval runs the tool once."""
    await alice.reconnect(sid, 0)
    resumed = await alice.expect("agent.session_resumed", timeout=10)
    assert resumed["metadata"]["pending_confirm"] == [step_id]
    events = [e for e in alice.received if e.get("session_id") == sid]
    assert "agent.session_end" not in names(events) and "agent.interrupted" not in names(events)
    await alice.send({"event": "user.response", "session_id": sid, "step_id": step_id,
                      "content": {"approved": True}})  # fmt: skip
    done = await alice.until_terminal(sid, timeout=10)
    assert done[-1]["event"] == "agent.final_answer" and "booked a table" in done[-1]["content"]
    runs = booked(tool_log)
    assert runs.count("a table") == 1 and "everything" not in runs


async def test_other_principals_get_forbidden_in_one_process(serve, connect, tokens_file, tool_log):
    server = await serve(files=(CLUSTER_AGENT,), auth_tokens_file=tokens_file)
    alice = await connect(server, **bearer("alice"))
    sid, step_id = await pending_booking(alice)
    bob = await connect(server, **bearer("bob"))
    await refused_everything(bob, sid, step_id)
    assert not [e for e in alice.received if e["event"] == "system.error"]
    alice_again = await connect(server, **bearer("alice"))  # her other connection
    await owner_goes_on(alice_again, sid, step_id, tool_log)


async def test_with_auth_off_the_session_id_is_the_capability(serve, connect, tool_log):
    server = await serve(files=(CLUSTER_AGENT,))
    first = await connect(server)
    sid, step_id = await pending_booking(first)
    second = await connect(server)  # anyone holding the id
    await owner_goes_on(second, sid, step_id, tool_log)


async def test_auth_and_ownership_hold_across_two_nodes_on_redis(
    cluster_factory, connect, tokens_file, tool_log
):
    require_redis()
    cluster = await cluster_factory(
        2,
        args=(CLUSTER_AGENT, "--auth-tokens-file", tokens_file),
        env={"CLUSTER_TOOL_LOG": str(tool_log)},
    )
    one, two = cluster[0], cluster[1]
    alice = await connect(one, **bearer("alice"))
    sid, step_id = await pending_booking(alice)
    bob = await connect(two, **bearer("bob"))  # the session is not in this process
    await refused_everything(bob, sid, step_id)
    bob_on_one = await connect(one, **bearer("bob"))  # nor in this one, where it runs
    await bob_on_one.send({"event": "user.cancel", "session_id": sid})
    await bob_on_one.error("forbidden")

    # A ticket from one process opens a connection on the other, once.
    issued = (await ticket(one, TOKENS["alice"]))[1]["ticket"]
    alice_on_two = await connect(two, path=f"/?ticket={issued}")
    await owner_goes_on(alice_on_two, sid, step_id, tool_log)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(one, path=f"/?ticket={issued}")
    assert refused.value.status == 401
