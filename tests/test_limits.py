"""Every limit of Settings, tripped and recovered from: the answer is its PROTOCOL.md code
(or close code), and the connection, the session and the server stay up."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from myagent_ws.connection import CLOSE_SLOW_CONSUMER
from myagent_ws.keys import METRICS, SESSIONS
from tests.agents import big_result_agent, burst_agent, counting_agent

FIXTURES = Path(__file__).resolve().parent / "fixtures"


async def test_max_sessions_per_process(serve, connect):
    server = await serve(max_sessions=2)
    a, b = await connect(server), await connect(server)
    first = await a.create_session()
    await b.create_session()
    await a.send({"event": "user.create_session"})
    error = await a.error("too_many_sessions")
    assert "server" in error["content"]
    await a.send({"event": "user.end_session", "session_id": first})
    await a.expect("agent.session_end")
    assert await a.create_session()  # room again


async def test_reconnect_counts_toward_max_sessions_per_connection(serve, connect):
    server = await serve(max_sessions_per_connection=1)
    owner = await connect(server)
    first = await owner.create_session()
    other = await connect(server)
    second = await other.create_session()
    await owner.send({"event": "user.reconnect", "session_id": second})
    await owner.error("too_many_sessions")
    await owner.reconnect(first, last_seq=1)  # already attached: not one more
    await owner.expect("agent.session_resumed", session_id=first)


async def test_rate_limit_answers_rate_limited_and_recovers(serve, connect):
    server = await serve(rate_limit_per_s=10, rate_limit_burst=5)
    client = await connect(server)
    sid = await client.create_session()  # 1 of the burst
    for _ in range(40):  # acks are exempt
        await client.send({"event": "user.ack", "session_id": sid, "content": {"last_seq": 1}})
    for _ in range(8):
        await client.send({"event": "user.list_agents"})
    replies = [await client.recv() for _ in range(8)]
    kinds = [r["event"] for r in replies]
    assert kinds.count("system.agents") == 4, kinds
    limited = [r for r in replies if r["event"] == "system.error"]
    assert {r["metadata"]["code"] for r in limited} == {"rate_limited"}
    retry_ms = limited[0]["metadata"]["retry_after_ms"]
    assert retry_ms == 100
    await asyncio.sleep(retry_ms / 1000 + 0.05)
    assert (await client.turn(sid, "Paris?"))[-1]["event"] == "agent.final_answer"
    assert not client.ws.closed


async def test_bad_frames_count_toward_the_rate_limit(serve, connect):
    server = await serve(rate_limit_per_s=5, rate_limit_burst=3)
    client = await connect(server)
    for _ in range(5):
        await client.send("not json")
    codes = [(await client.recv())["metadata"]["code"] for _ in range(5)]
    assert codes == ["invalid_json"] * 3 + ["rate_limited"] * 2


async def test_max_event_bytes_truncates_for_the_wire_and_the_model_keeps_it_all(serve, connect):
    size = 5 << 20  # more than a default aiohttp client's 4 MiB frame limit
    server = await serve(files=(), agents=(big_result_agent(size),))
    client = await connect(server)  # default max_msg_size
    sid = await client.create_session()
    events = await client.turn(sid, "big")
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["metadata"]["truncated"] is True
    assert result["metadata"]["original_bytes"] == size
    assert len(result["content"].encode()) == 256 << 10
    assert events[-1]["content"] == f"the model saw {size} characters"


async def test_attached_but_idle_session_expires(serve, connect):
    server = await serve(session_idle_ttl_s=0.3, reap_interval_s=0.05)
    client = await connect(server)
    idle = await client.create_session()
    busy = await client.create_session()
    for _ in range(6):  # a message now and then keeps a session alive
        await asyncio.sleep(0.1)
        await client.send({"event": "user.cancel", "session_id": busy})
        await client.expect("system.notice")
    ended = [e for e in client.received if e["event"] == "agent.session_end"]
    end = ended[0] if ended else await client.expect("agent.session_end", session_id=idle)
    assert end["session_id"] == idle
    assert end["metadata"]["reason"] == "expired" and "idle" in end["content"]
    assert busy in server.app[SESSIONS].sessions
    await client.send({"event": "user.message", "session_id": idle, "content": "hi"})
    await client.error("session_not_found")


async def test_max_history_turns_keeps_the_newest_whole_turns(serve, connect):
    server = await serve(files=(), agents=(counting_agent(),), max_history_turns=2)
    client = await connect(server)
    sid = await client.create_session()
    answers = [(await client.turn(sid, text))[-1]["content"] for text in "abcde"]
    assert answers == ["1: a", "2: a | b", "3: a | b | c", "3: b | c | d", "3: c | d | e"]


async def test_replay_past_the_buffer_says_the_gap_then_continues(serve, connect):
    server = await serve(files=(), agents=(burst_agent(50),), replay_buffer=20)
    first = await connect(server)
    sid = await first.create_session()
    await first.turn(sid, "go")  # seq 2..53: only the last 20 stay buffered
    last = first.last_seq[sid]
    await first.ws.close()
    second = await connect(server)
    second.last_seq[sid] = last - 20  # the client knows the replay starts after the gap
    await second.send({"event": "user.reconnect", "session_id": sid, "content": {"last_seq": 5}})
    resumed = await second.expect("agent.session_resumed")
    assert resumed["metadata"]["replay_gap"] == {"from": 6, "to": last - 20}
    assert resumed["metadata"]["replayed"] == 20
    assert (await second.turn(sid, "again"))[-1]["event"] == "agent.final_answer"


async def test_one_connections_ack_does_not_trim_what_another_has_not_seen(serve, connect):
    server = await serve()
    a, b = await connect(server), await connect(server)
    sid = await a.create_session()
    await b.reconnect(sid, last_seq=1)
    await b.expect("agent.session_resumed")
    await a.turn(sid, "Tokyo?")
    last = a.last_seq[sid]
    await a.send({"event": "user.ack", "session_id": sid, "content": {"last_seq": last}})
    await a.send({"event": "user.list_agents"})
    await a.expect("system.agents")  # the ack was handled
    buffer = server.app[SESSIONS].sessions[sid].buffer
    assert buffer.first_seq <= 2  # b has acknowledged nothing past its attach point
    await b.ws.close()
    c = await connect(server)
    await c.reconnect(sid, last_seq=2)
    events = []
    while (event := await c.recv())["event"] != "agent.session_resumed":
        events.append(event)
    assert [e["seq"] for e in events] == list(range(3, last + 1))
    assert "replay_gap" not in event["metadata"]


async def quiet_turn(http: aiohttp.ClientSession, url: Any, text: str) -> tuple[Any, str]:
    """A raw client (no frame size limit) that creates a session and sends `text`; it then
    reads nothing until the test says so."""
    ws = await http.ws_connect(url, max_msg_size=0)
    await ws.receive()  # system.connected
    await ws.send_json({"event": "user.create_session"})
    sid = json.loads((await ws.receive()).data)["session_id"]
    await ws.send_json({"event": "user.message", "session_id": sid, "content": text})
    return ws, sid


async def read_until(ws: Any, *names: str, timeout: float = 20) -> dict[str, Any]:
    """Raw frames up to the first event named one of `names` (these tests stream
    megabytes; WsClient would schema-check every frame)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            if event["event"] in names:
                return event


async def resume(http: aiohttp.ClientSession, url: Any, sid: str, last_seq: int) -> Any:
    """A new raw connection attached to `sid` from `last_seq`: its agent.session_resumed."""
    ws = await http.ws_connect(url, max_msg_size=0)
    await ws.receive()  # system.connected
    await ws.send_json(
        {"event": "user.reconnect", "session_id": sid, "content": {"last_seq": last_seq}}
    )
    return ws, await read_until(ws, "agent.session_resumed")


async def test_a_client_that_stops_reading_is_closed_with_4008_and_resumes(serve):
    server = await serve(
        files=(),
        agents=(burst_agent(2000, size=5000),),
        send_buffer_bytes=64 << 10,
        send_timeout_s=0.3,
    )
    url = server.make_url("/")
    async with aiohttp.ClientSession() as http:
        ws, sid = await quiet_turn(http, url, "go")
        last_seq = 1
        await asyncio.sleep(1.0)  # not reading while ~10 MB stream out
        async with asyncio.timeout(20):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                last_seq = json.loads(msg.data)["seq"]
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_SLOW_CONSUMER
        assert sid in server.app[SESSIONS].sessions
        assert "myagent_ws_slow_clients_closed_total 1.0" in server.app[METRICS].render().decode()
        ws2, resumed = await resume(http, url, sid, last_seq)
        assert resumed["metadata"]["last_seq"] == last_seq
        gap = resumed["metadata"].get("replay_gap")
        assert gap is None or gap["from"] == last_seq + 1
        await ws2.send_json({"event": "user.message", "session_id": sid, "content": "more"})
        event = await read_until(ws2, "agent.final_answer", "agent.error", timeout=30)
        assert event["event"] == "agent.final_answer"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_client_that_never_reads_costs_under_twice_send_buffer_bytes(cli_server, connect):
    """The real server in its own process: RSS growth while a non-reading client's
    session streams 12 MB stays under 2 x send_buffer_bytes, and the session resumes."""
    limit = 1 << 20  # the default send_buffer_bytes
    # 200 KB pieces: each frame is its own mmap, so RSS shows what is held, not how
    # malloc's heap happens to be fragmented.
    env = {"MYAGENT_WS_SEND_TIMEOUT_S": "1", "LONG_STREAM_PIECES": "60"}
    server = cli_server(
        str(FIXTURES / "long_stream_agent.py"), env={**env, "LONG_STREAM_SIZE": "200000"}
    )
    pid = server.proc.pid
    warm = await connect(server, max_msg_size=0)
    warm_sid = await warm.create_session()
    await warm.turn(warm_sid, "warm up the allocator", timeout=30)
    await warm.send({"event": "user.end_session", "session_id": warm_sid})
    await warm.expect("agent.session_end")
    await asyncio.sleep(0.3)
    baseline = _rss(pid)
    async with aiohttp.ClientSession() as http:
        _, sid = await quiet_turn(http, server.url, "long")
        peak = baseline
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # 60 x 200 KB at ~1 ms a piece, never read
            peak = max(peak, _rss(pid))
            await asyncio.sleep(0.02)
        growth = peak - baseline
        assert growth < 2 * limit, f"RSS grew {growth} bytes"

        again, _ = await resume(http, server.url, sid, 1)
        await again.send_json({"event": "user.message", "session_id": sid, "content": "short"})
        event = await read_until(again, "agent.final_answer")
        assert event["content"] == "streamed 5 pieces"
        print(f"RSS growth with a non-reading client: {growth / 1024:.0f} KiB")


async def test_a_turn_waiting_for_a_lagging_client_goes_on_when_that_client_leaves(serve):
    server = await serve(
        files=(),
        agents=(burst_agent(2000, size=5000),),
        send_buffer_bytes=64 << 10,
        send_timeout_s=60,
    )
    async with aiohttp.ClientSession() as http:
        ws, sid = await quiet_turn(http, server.make_url("/"), "go")
        await asyncio.sleep(0.5)  # not reading: the turn is now waiting for this client
        session = server.app[SESSIONS].sessions[sid]
        assert session.busy
        await ws.close()
        async with asyncio.timeout(10):  # far less than send_timeout_s
            while session.busy:
                await asyncio.sleep(0.05)
