"""myagent_ws.client against a real server: turns, approvals, errors, acks, and every event
exactly once, in order, while a TCP proxy cuts the link again and again mid-turn."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from bench.linkcut import LinkCutter
from myagent import create_react_agent
from myagent_ws.client import TERMINAL, Client, ClientError, connect
from myagent_ws.keys import SESSIONS
from myagent_ws.protocol import Protocol
from myagent_ws.redis_store import RedisStore
from tests.agents import (
    FAST,
    PacedModel,
    WaitTool,
    bookings,
    burst_agent,
    counting_agent,
    key,
    waiting_agent,
)
from tests.client import WsClient, names, ws_url
from tests.cluster import REDIS_URL, delete_keys, fresh_prefix, require_redis
from tests.conftest import BOOKING, TOKENS

_protocol = Protocol()


@pytest.fixture(autouse=True)
def every_frame_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every frame the client reads after system.connected is checked against the
    outbound schemas, as tests/client.py's WsClient does; a test with a frame that breaks
    them fails at teardown, whatever the client made of it."""
    on_frame = Client._on_frame
    broken: list[str] = []

    async def checked(self: Client, event: dict[str, Any], size: int) -> None:
        try:
            _protocol.check_outbound(event)
        except Exception as exc:
            broken.append(f"{event.get('event')}: {exc}")
        await on_frame(self, event, size)

    monkeypatch.setattr(Client, "_on_frame", checked)
    yield
    assert broken == []


async def test_send_streams_a_weather_turn_and_ask_returns_the_answer(serve: Any) -> None:
    server = await serve()
    async with connect(ws_url(server)) as client:
        assert client.agents == ["weather-assistant"]
        assert [a["name"] for a in await client.list_agents()] == ["weather-assistant"]
        session = await client.create_session()  # the default agent
        assert session.agent == "weather-assistant"
        events = [e async for e in session.send("北京今天天气怎么样？")]
        names = [e["event"] for e in events]
        assert names[0] == "agent.thinking" and names[-1] == "agent.final_answer"
        assert "agent.tool_call" in names and "agent.tool_result" in names
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        answer = await session.ask("And in Shanghai?")
        assert "Shanghai" in answer or "上海" in answer


async def test_a_session_remembers_and_sessions_are_apart(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),))
    async with connect(ws_url(server)) as client:
        one, two = await client.create_session("counter"), await client.create_session()
        assert await one.ask("a") == "1: a"
        assert await one.ask("b") == "2: a | b"
        assert await two.ask("c") == "1: c"


async def test_refusals_raise_client_errors_and_the_client_stays_usable(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(), counting_agent("other")))
    async with connect(ws_url(server)) as client:
        with pytest.raises(ClientError) as no_agent:
            await client.create_session("nope")
        assert no_agent.value.code == "agent_not_found"
        with pytest.raises(ClientError) as ambiguous:
            await client.create_session()
        assert ambiguous.value.code == "agent_required"
        session = await client.create_session("other")
        await session.end()
        with pytest.raises(ClientError) as ended:
            await session.ask("hello")
        assert ended.value.code == "session_end"
        assert await (await client.create_session("counter")).ask("still here") == "1: still here"


async def test_approval_runs_the_tool_once(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with connect(ws_url(server)) as client:
        session = await client.create_session()
        events = []
        async for event in session.send("Book a table for 2 at 7pm"):
            events.append(event)
            if event["event"] == "agent.user_confirm":
                await session.respond(event["step_id"], approved=True)
        assert events[-1]["event"] == "agent.final_answer"
        assert "booking #1" in events[-1]["content"]
        assert len(bookings(server, session.id)) == 1


async def test_every_event_exactly_once_while_the_link_is_cut_mid_turn(serve: Any) -> None:
    pieces = 300
    agent = create_react_agent(name="paced", tools=[], model=PacedModel(pieces, 0.002))
    server = await serve(files=(), agents=(agent,))
    async with LinkCutter(server.port) as cutter:
        async with connect(cutter.url, backoff=FAST) as client:
            session = await client.create_session()
            events: list[dict[str, Any]] = []
            async for event in session.send("go"):
                events.append(event)
                # Cut the link every 40 events: mid-stream, replay, and right after a resume.
                if len(events) % 40 == 0:
                    cutter.cut()
            assert client.reconnects >= 5, client.reconnects
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(2, 2 + len(events))), "a gap or a repeat"
            partial = "".join(e["content"] for e in events if e["event"] == "agent.partial_answer")
            expected = "".join(f"{i};" for i in range(pieces))
            assert partial == expected
            assert events[-1]["event"] == "agent.final_answer"
            assert events[-1]["content"] == expected
            assert sum(e["event"] in TERMINAL for e in events) == 1
            resumed = [e for e in events if e["event"] == "agent.session_resumed"]
            assert len(resumed) == client.reconnects
            assert all("replay_gap" not in e["metadata"] for e in resumed)
            # The next turn on the same client needs no help.
            assert (await session.ask("again")).endswith(f"{pieces - 1};")


async def test_acks_let_the_server_trim_its_replay_buffer(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),))
    async with connect(ws_url(server), ack_interval_s=0.01) as client:
        session = await client.create_session()
        await session.ask("one")
        buffer = server.app[SESSIONS].sessions[session.id].buffer
        async with asyncio.timeout(5):
            while buffer.first_seq <= session.last_seq:
                await asyncio.sleep(0.01)
        assert buffer.first_seq == session.last_seq + 1


async def test_leaving_a_turn_early_cancels_it_and_the_next_turn_is_clean(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    gate = key()
    async with connect(ws_url(server)) as client:
        session = await client.create_session()
        async for event in session.send(gate):
            if event["event"] == "agent.tool_call":
                break  # the tool now waits on a gate nobody opens
        WaitTool.gate(second := key()).set()
        events = [e async for e in session.send(second)]
        assert events[-1]["event"] == "agent.final_answer"
        assert f"gate {second} opened" in events[-1]["content"]
        assert all(gate not in str(e.get("content")) for e in events)


async def test_token_auth(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),), auth_tokens=(TOKENS["alice"],))
    with pytest.raises(ClientError) as refused:
        async with connect(ws_url(server), token="wrong"):
            pass
    assert refused.value.code == "unauthorized"
    async with connect(ws_url(server), token=TOKENS["alice"]) as client:
        assert await (await client.create_session()).ask("hi") == "1: hi"


@pytest.mark.parametrize("lost", ["message", "answer"])
async def test_a_message_lost_with_the_link_is_sent_again_and_runs_once(
    serve: Any, lost: str
) -> None:
    """The message never reaches the server, or it does and its events never come back:
    either way the client sends it again after the reconnect, and it runs once."""
    server = await serve(files=(), agents=(counting_agent(),))
    async with LinkCutter(server.port) as cutter:
        async with connect(cutter.url, backoff=FAST) as client:
            session = await client.create_session()
            assert await session.ask("one") == "1: one"
            stored = server.app[SESSIONS].sessions[session.id]
            if lost == "message":
                cutter.drop_up = True
            else:
                cutter.drop_down = True
            turn = session.send("two")
            first = asyncio.ensure_future(turn.__anext__())
            async with asyncio.timeout(5):  # the message has left the client
                while not cutter.dropped:
                    await asyncio.sleep(0.01)
            if lost == "answer":  # the turn ran; its events are on the floor
                async with asyncio.timeout(5):
                    while stored.busy or stored.seq < 6:
                        await asyncio.sleep(0.01)
            cutter.drop_up = cutter.drop_down = False
            cutter.cut()
            events = [await first] + [e async for e in turn]
            assert events[-1]["event"] == "agent.final_answer"
            assert events[-1]["content"] == "2: one | two"  # ran once
            assert sum(e["event"] in TERMINAL for e in events) == 1
            assert client.reconnects == 1
            assert await session.ask("three") == "3: one | two | three"


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_the_server_runs_a_repeated_message_id_once(
    serve: Any, connect: Any, shared: bool
) -> None:
    store = None
    if shared:
        require_redis()
        store = RedisStore(REDIS_URL, prefix := fresh_prefix())
    try:
        # on_busy=queue: a repeat that got through would run as a turn of its own.
        server = await serve(files=(), agents=(counting_agent(),), store=store, on_busy="queue")
        ws = await connect(server)
        sid = await ws.create_session()
        message = {
            "event": "user.message",
            "session_id": sid,
            "content": "hi",
            "metadata": {"message_id": "m-1"},
        }
        await ws.send(message)
        await ws.send(message)  # the client's resend after a dropped link
        events = await ws.until_terminal(sid)
        assert events[-1]["content"] == "1: hi"
        await ws.send({**message, "content": "there", "metadata": {"message_id": "m-2"}})
        events = await ws.until_terminal(sid)
        assert events[-1]["content"] == "2: hi | there"  # "m-1" ran once
        assert "system.error" not in names(ws.received) and "system.notice" not in names(
            ws.received
        )
    finally:
        if shared:
            await delete_keys(prefix)


async def test_a_turns_first_thinking_repeats_its_message_for_later_readers(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),))
    async with connect(ws_url(server)) as client:
        session = await client.create_session()
        long = "x" * 5000
        for text, shown in (("hello", "hello"), (long, long[:4000])):
            events = [e async for e in session.send(text)]
            thinking = [e for e in events if e["event"] == "agent.thinking"]
            assert thinking[0]["metadata"]["user_message"] == shown
            assert all("user_message" not in e["metadata"] for e in thinking[1:])
        # A second client attaching later reads both messages from the replay.
        async with connect(ws_url(server)) as other:
            watcher = await other.attach(session.id)
            seen = []
            async for event in watcher.events(idle_timeout_s=5):
                if event["event"] == "agent.thinking":
                    seen.append(event["metadata"].get("user_message"))
                if event["event"] == "agent.session_resumed":
                    break
            assert seen == ["hello", long[:4000]]


async def test_after_a_turn_times_out_the_next_turn_gets_only_its_own_events(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    async with connect(ws_url(server)) as client:
        session = await client.create_session()
        with pytest.raises(ClientError) as late:
            await session.ask(key(), timeout_s=0.3)  # its gate never opens
        assert late.value.code == "timeout"
        WaitTool.gate(second := key()).set()
        assert await session.ask(second) == f"done: gate {second} opened"
        WaitTool.gate(third := key()).set()
        assert await session.ask(third) == f"done: gate {third} opened"


async def test_rate_limited_messages_are_sent_again_after_the_wait(serve: Any) -> None:
    server = await serve(
        files=(), agents=(counting_agent(),), rate_limit_burst=2, rate_limit_per_s=10.0
    )
    async with connect(ws_url(server)) as client:
        session = await client.create_session()  # frame 1
        answers = [await session.ask(text) for text in ("a", "b", "c")]  # 2, then limited
        assert answers == ["1: a", "2: a | b", "3: a | b | c"]


async def test_a_message_refused_as_busy_may_be_sent_again_with_its_id(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    async with aiohttp.ClientSession() as http:
        ws = WsClient(await http.ws_connect(server.make_url("/")))
        await ws.recv()
        sid = await ws.create_session()
        await ws.send({"event": "user.message", "session_id": sid, "content": (gate := key())})
        await ws.expect("agent.tool_call")
        retry = {
            "event": "user.message",
            "session_id": sid,
            "content": (second := key()),
            "metadata": {"message_id": "m-1"},
        }
        await ws.send(retry)
        await ws.error("session_busy")
        WaitTool.gate(gate).set()
        await ws.expect("agent.final_answer")
        WaitTool.gate(second).set()
        await ws.send(retry)  # the same id: refused before, so it runs now
        final = await ws.expect("agent.final_answer")
        assert second in final["content"]


async def test_closing_the_client_ends_a_turn_being_read(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    async with connect(ws_url(server)) as client:
        session = await client.create_session()
        turn = session.send(key())

        async def read() -> list[str]:
            return [e["event"] async for e in turn]

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)
        await client.close()
        with pytest.raises(ClientError) as closed:
            async with asyncio.timeout(2):
                await reader
        assert closed.value.code == "closed"


async def test_unread_events_are_bounded_in_bytes_and_none_is_lost(serve: Any) -> None:
    server = await serve(files=(), agents=(burst_agent(2000, 100),))
    async with connect(ws_url(server), max_queued_bytes=20_000) as client:
        session = await client.create_session()
        turn = session.send("go")
        first = await turn.__anext__()  # the message is out; now nobody reads for a while
        inbox = session._queue
        async with asyncio.timeout(5):  # the reader fills the inbox to its bound, then waits
            while inbox.bytes < 20_000:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert inbox.bytes < 20_000 + 1_000  # at most one frame past the bound
        events = [first] + [e async for e in turn]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert sum(e["event"] == "agent.partial_answer" for e in events) == 2000
        assert events[-1]["event"] == "agent.final_answer"


async def test_re_attaches_refused_by_the_rate_limit_are_sent_again(serve: Any) -> None:
    server = await serve(
        files=(), agents=(counting_agent(),), rate_limit_burst=3, rate_limit_per_s=20.0
    )
    async with LinkCutter(server.port) as cutter:
        async with connect(cutter.url, backoff=FAST) as client:
            sessions = []
            for _ in range(6):
                sessions.append(await client.create_session())
                await asyncio.sleep(0.06)  # within the rate
            cutter.cut()  # six user.reconnect at once: three are over the burst
            async with asyncio.timeout(5):
                while client.reconnects == 0:
                    await asyncio.sleep(0.01)
            for number, session in enumerate(sessions):
                assert await session.ask(f"s{number}") == f"1: s{number}"
