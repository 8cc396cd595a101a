"""Graceful drain, on the real `myagent-ws server` in a subprocess: SIGTERM or a first
Ctrl-C makes /ready 503 and refuses new sessions while running turns finish (up to
drain_timeout_s); then every session ends (reason "shutdown"), sockets close with 1001 and
the process exits 0. A second signal skips the wait."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from myagent_ws.protocol import Protocol
from tests.client import WsClient, names

SLOW = str(Path(__file__).resolve().parent / "fixtures" / "slow_agent.py")
_protocol = Protocol()


async def start_turn(client: WsClient, sid: str, text: str) -> None:
    """Send a message and wait until its turn runs (the model has been called)."""
    await client.send({"event": "user.message", "session_id": sid, "content": text})
    await client.expect("agent.thinking", session_id=sid)


async def until_closed(
    client: WsClient, sid: str, timeout: float = 20.0
) -> tuple[list[dict[str, Any]], int]:
    """This session's events up to the close frame (each checked against the schemas),
    and the close code."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                assert msg.type is aiohttp.WSMsgType.CLOSE, msg
                return events, msg.data
            event = json.loads(msg.data)
            _protocol.check_outbound(event)
            if event.get("session_id") == sid:
                events.append(event)


async def status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        return response.status


async def wait_until_not_ready(http: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(5):
        while await status(http, base + "/ready") != 503:
            await asyncio.sleep(0.02)


async def exit_status(server: Any, timeout: float = 20.0) -> int:
    return await asyncio.to_thread(server.proc.wait, timeout)


async def test_sigterm_lets_a_running_turn_finish_then_ends_sessions_and_exits_0(
    cli_server, connect
):
    server = cli_server(SLOW)  # the default drain_timeout_s, 30 s
    client = await connect(server)
    sid = await client.create_session()
    async with aiohttp.ClientSession() as http:
        await start_turn(client, sid, "sleep 3")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        await wait_until_not_ready(http, server.http)
        async with http.get(server.http + "/health") as health:
            assert health.status == 200 and (await health.json())["status"] == "ok"
        late = await connect(server)  # still listening
        await late.send({"event": "user.create_session"})
        refused = await late.error("server_draining")
        assert "shutting down" in refused["content"] and "connect again" in refused["content"]
        await late.send({"event": "user.list_agents"})  # the connection stays open
        assert (await late.expect("system.agents"))["content"][0]["name"] == "sleepy"
        assert time.monotonic() - signalled < 3, "the checks above must run during the turn"

        events, code = await until_closed(client, sid)
        assert names(events) == ["agent.final_answer", "agent.session_end"], events
        assert events[0]["content"] == "slept 3 s"
        assert events[1]["metadata"]["reason"] == "shutdown"
        assert code == aiohttp.WSCloseCode.GOING_AWAY
        _, late_code = await until_closed(late, "none")
        assert late_code == aiohttp.WSCloseCode.GOING_AWAY
    assert await exit_status(server) == 0
    took = time.monotonic() - signalled
    assert 2.5 < took < 8, f"exited {took:.1f} s after SIGTERM for a 3 s turn"
    output = server.stop()
    assert "Draining: 1 turn(s) running; waiting up to 30 s" in output
    assert "Ctrl-C again to stop now" in output
    assert "Drain over: no turn running after" in output
    print(f"SIGTERM to exit: {took:.2f} s (turn of 3 s)")


async def test_a_turn_longer_than_the_drain_is_interrupted_when_it_ends(cli_server, connect):
    server = cli_server(SLOW, "--drain-timeout-s", "1")
    client = await connect(server)
    sid = await client.create_session()
    await start_turn(client, sid, "sleep 60")
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    events, code = await until_closed(client, sid)
    closed = time.monotonic() - signalled
    assert names(events) == ["agent.interrupted", "agent.session_end"], events
    assert events[1]["metadata"]["reason"] == "shutdown"
    assert code == aiohttp.WSCloseCode.GOING_AWAY
    assert await exit_status(server) == 0
    took = time.monotonic() - signalled
    assert closed >= 1.0, f"closed {closed:.2f} s after SIGTERM, before the 1 s drain ended"
    assert took < 6, f"exited {took:.1f} s after SIGTERM with a 1 s drain"
    output = server.stop()
    assert "1 turn(s) still running after 1.0 s; interrupting them" in output
    print(f"SIGTERM to close: {closed:.2f} s, to exit: {took:.2f} s (drain 1 s, turn 60 s)")


async def keep_signalling(proc: Any, sig: int, count: int = 2500) -> None:
    """Send `sig` every 2 ms until the process exits (at most `count` times)."""
    for _ in range(count):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        await asyncio.sleep(0.002)


async def test_a_second_signal_skips_the_wait(cli_server, connect):
    server = cli_server(SLOW, env={"MYAGENT_WS_DRAIN_TIMEOUT_S": "60"})
    client = await connect(server)
    sid = await client.create_session()
    async with aiohttp.ClientSession() as http:
        await start_turn(client, sid, "sleep 60")
        server.proc.send_signal(signal.SIGTERM)
        await wait_until_not_ready(http, server.http)  # draining
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGINT)  # a second Ctrl-C: stop now
        # And more, until the process is gone: none may kill the shutdown under way.
        burst = asyncio.create_task(keep_signalling(server.proc, signal.SIGTERM))
        events, code = await until_closed(client, sid)
        await burst
    assert names(events) == ["agent.interrupted", "agent.session_end"], events
    assert events[1]["metadata"]["reason"] == "shutdown"
    assert code == aiohttp.WSCloseCode.GOING_AWAY
    assert await exit_status(server) == 0
    took = time.monotonic() - signalled
    assert took < 5, f"exited {took:.1f} s after the second signal (drain 60 s)"
    output = server.stop()
    assert (
        "waiting up to 60 s" in output
        and "a second signal; interrupting 1 running turn(s) now" in output
    )
    print(f"second signal to exit: {took:.2f} s (drain 60 s, turn 60 s)")


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_an_idle_server_exits_at_once_on_sigterm(cli_server, connect, event_loop):
    server = cli_server(SLOW, "--event-loop", event_loop)
    client = await connect(server)
    sid = await client.create_session()
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    events, code = await until_closed(client, sid)
    assert names(events) == ["agent.session_end"] and code == aiohttp.WSCloseCode.GOING_AWAY
    assert await exit_status(server) == 0
    took = time.monotonic() - signalled
    assert took < 3, f"an idle server took {took:.1f} s to exit"
    assert "Draining: 0 turn(s) running" in server.stop()
    print(f"idle SIGTERM to exit: {took:.2f} s")
