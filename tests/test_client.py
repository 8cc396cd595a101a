"""myagent_ws.client against a real server: turns, approvals, errors, acks, and every event
exactly once, in order, while a TCP proxy cuts the link again and again mid-turn."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from myagent import Model, ModelReply, create_react_agent
from myagent_ws.client import TERMINAL, Backoff, ClientError, connect
from myagent_ws.keys import SESSIONS
from tests.agents import WaitTool, counting_agent, key, waiting_agent
from tests.conftest import EXAMPLES, TOKENS

BOOKING = str(EXAMPLES / "booking_agent.py")
FAST = Backoff(initial_s=0.02, max_s=0.2)


class PacedModel(Model):
    """Streams `pieces` numbered deltas, one every `pause_s`: a turn long enough to be cut."""

    provider = "function"
    offline = True
    model_id = "paced"

    def __init__(self, pieces: int, pause_s: float) -> None:
        self.pieces, self.pause_s = pieces, pause_s

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        for i in range(self.pieces):
            await asyncio.sleep(self.pause_s)
            yield f"{i};"
        yield ModelReply(text="".join(f"{i};" for i in range(self.pieces)))


class LinkCutter:
    """A TCP proxy on loopback whose `cut()` aborts every link through it, as a dropped
    network does: no close frame, no FIN to wait for."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    def cut(self) -> None:
        for writer in tuple(self.links):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()


def url(server: Any) -> str:
    return str(server.make_url("/")).replace("http", "ws", 1)


async def test_send_streams_a_weather_turn_and_ask_returns_the_answer(serve: Any) -> None:
    server = await serve()
    async with connect(url(server)) as client:
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
    async with connect(url(server)) as client:
        one, two = await client.create_session("counter"), await client.create_session()
        assert await one.ask("a") == "1: a"
        assert await one.ask("b") == "2: a | b"
        assert await two.ask("c") == "1: c"


async def test_refusals_raise_client_errors_and_the_client_stays_usable(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(), counting_agent("other")))
    async with connect(url(server)) as client:
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
    async with connect(url(server)) as client:
        session = await client.create_session()
        events = []
        async for event in session.send("Book a table for 2 at 7pm"):
            events.append(event)
            if event["event"] == "agent.user_confirm":
                await session.respond(event["step_id"], approved=True)
        assert events[-1]["event"] == "agent.final_answer"
        assert "booking #1" in events[-1]["content"]
        tool = server.app[SESSIONS].sessions[session.id].agent.tools[0]
        assert len(tool.bookings) == 1


async def test_every_event_exactly_once_while_the_link_is_cut_mid_turn(serve: Any) -> None:
    pieces = 300
    agent = create_react_agent(name="paced", tools=[], model=PacedModel(pieces, 0.002))
    server = await serve(files=(), agents=(agent,))
    cutter = LinkCutter(server.port)
    port = await cutter.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/", backoff=FAST) as client:
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
    finally:
        await cutter.close()


async def test_acks_let_the_server_trim_its_replay_buffer(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),))
    async with connect(url(server), ack_interval_s=0.01) as client:
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
    async with connect(url(server)) as client:
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
        async with connect(url(server), token="wrong"):
            pass
    assert refused.value.code == "unauthorized"
    async with connect(url(server), token=TOKENS["alice"]) as client:
        assert await (await client.create_session()).ask("hi") == "1: hi"
