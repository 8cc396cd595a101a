"""`myagent-ws server --reload`: a real server process serving an agent file that imports
a helper module beside it, edited while a real WebSocket client stays connected."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.multinode import free_port
from tests.client import WsClient
from tests.conftest import CLI, ROOT

# The contract: an edit is served within this many seconds.
RELOAD_S = 2.0

# "stamp please" calls stamp, "linger please" calls linger (the offline model picks by
# words), which runs until the turn is stopped.
AGENT = """
import asyncio

from helper import decorate
from myagent import BaseTool, ToolResult, create_react_agent


class Stamp(BaseTool):
    name = "stamp"
    description = "Stamp the message."

    async def execute(self) -> ToolResult:
        return ToolResult(output=decorate("{tool}"))


class Linger(BaseTool):
    name = "linger"
    description = "Linger a while."

    async def execute(self) -> ToolResult:
        await asyncio.sleep(30)
        return ToolResult(output="lingered")


agent = create_react_agent(name="stamper", tools=[Stamp(), Linger()], max_steps=3)
"""
HELPER = """
def decorate(text):
    return "[" + text + "|{helper}]"
"""


class ReloadServer:
    """`myagent-ws server FILE --reload` in a subprocess, its stdout and stderr in files
    (read while it runs)."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.stdout, self.stderr = folder / "stdout.txt", folder / "stderr.txt"
        command = [CLI, "server", *args, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=err
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output() + self.errors_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the server did not start listening in time")

    def output(self) -> str:
        return self.stdout.read_text(encoding="utf-8")

    def errors_text(self) -> str:
        return self.stderr.read_text(encoding="utf-8")

    def errors(self) -> list[str]:
        return [line for line in self.errors_text().splitlines() if line.strip()]

    async def new_error(self, seen: int) -> list[str]:
        """stderr's lines once there are more than `seen` (bounded by RELOAD_S)."""
        deadline = time.monotonic() + RELOAD_S
        while time.monotonic() < deadline:
            if len(self.errors()) > seen:
                return self.errors()
            await asyncio.sleep(0.02)
        raise AssertionError(f"no new line on stderr within {RELOAD_S} s: {self.errors()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def reload_server(tmp_path: Path) -> Any:
    """reload_server() -> a ReloadServer serving tmp_path/stamp_agent.py (which imports
    tmp_path/helper.py), both at version v1."""
    started: list[ReloadServer] = []

    def start() -> ReloadServer:
        write(tmp_path / "stamp_agent.py", AGENT.format(tool="tool-v1"))
        write(tmp_path / "helper.py", HELPER.format(helper="helper-v1"))
        server = ReloadServer(tmp_path, str(tmp_path / "stamp_agent.py"), "--reload")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def write(path: Path, text: str) -> float:
    """Write the file as an editor saves it; returns when (monotonic)."""
    path.write_text(text, encoding="utf-8")
    return time.monotonic()


async def stamp(client: WsClient, session_id: str) -> str:
    """One turn; the stamp tool's output."""
    events = await client.turn(session_id, "stamp please")
    assert events[-1]["event"] == "agent.final_answer", events
    return next(e["content"] for e in events if e["event"] == "agent.tool_result")


async def reloaded(client: WsClient, *session_ids: str, since: float) -> float:
    """Wait (bounded by RELOAD_S after `since`, the edit) until each session has had its
    agent.session_end with reason "reloaded"; returns the seconds since the edit."""
    waiting = set(session_ids)
    async with asyncio.timeout(RELOAD_S - (time.monotonic() - since)):
        while waiting:
            event = await client.recv(RELOAD_S)
            if event["event"] == "agent.session_end" and event["session_id"] in waiting:
                assert event["metadata"]["reason"] == "reloaded", event
                waiting.discard(event["session_id"])
    return time.monotonic() - since


async def notices(client: WsClient, count: int) -> list[dict[str, Any]]:
    """The connection's system.notice events once there are `count` (bounded by
    RELOAD_S): each process that reloads tells every connection it holds."""
    async with asyncio.timeout(RELOAD_S):
        while len(got := [e for e in client.received if e["event"] == "system.notice"]) < count:
            await client.recv(RELOAD_S)
    return got


async def test_edits_to_the_agent_file_and_its_helper_are_served_within_2_s(
    reload_server, connect, tmp_path
):
    server = reload_server()
    banner = server.output()
    assert "reload: on, watching" in banner and "stamp_agent.py" in banner
    assert "1 local module imported (helper.py)" in banner, banner
    client = await connect(server)
    first = await client.create_session()
    assert await stamp(client, first) == "[tool-v1|helper-v1]"
    await client.send({"event": "user.message", "session_id": first, "content": "linger please"})
    await client.expect("agent.tool_call", session_id=first)

    # The tool's code (same length, so stale bytecode would pass for current), mid-turn.
    edited = write(tmp_path / "stamp_agent.py", AGENT.format(tool="tool-v2"))
    took_tool = await reloaded(client, first, since=edited)
    last = [e for e in client.received if e.get("session_id") == first][-2:]
    assert [e["event"] for e in last] == ["agent.interrupted", "agent.session_end"], last
    assert last[0]["metadata"]["reason"] == "reloaded", last
    [notice] = await notices(client, 1)
    assert "reloaded stamper" in notice["content"], notice
    second = await client.create_session()  # the same connection, at once
    assert await stamp(client, second) == "[tool-v2|helper-v1]"

    # A module the agent file imports.
    edited = write(tmp_path / "helper.py", HELPER.format(helper="helper-v2"))
    took_helper = await reloaded(client, second, since=edited)
    third = await client.create_session()
    assert await stamp(client, third) == "[tool-v2|helper-v2]"

    assert not client.ws.closed
    assert server.errors() == []
    reloads = [line for line in server.output().splitlines() if "reloaded stamper" in line]
    assert len(reloads) == 2 and "helper.py" in reloads[1], reloads
    print(
        f"reload latency: tool edit {took_tool * 1000:.0f} ms, helper {took_helper * 1000:.0f} ms"
    )


async def test_a_broken_edit_prints_one_line_and_the_old_agent_keeps_serving(
    reload_server, connect, tmp_path
):
    server = reload_server()
    agent_file, helper = tmp_path / "stamp_agent.py", tmp_path / "helper.py"
    client = await connect(server)
    session = await client.create_session()
    assert await stamp(client, session) == "[tool-v1|helper-v1]"

    broken = [
        # (file, text, what the one line names); each file stays broken until the end
        (helper, HELPER.format(helper="helper-v2") + "\ndef oops(:\n", "imported by"),
        (agent_file, AGENT.format(tool="tool-v2") + "\ndef oops(:\n", "syntax error"),
        (agent_file, "import no_such_module_here\n", "ModuleNotFoundError"),
        (agent_file, "x = 1\n", "defines no agent"),
    ]
    for path, text, expected in broken:
        seen = len(server.errors())
        write(path, text)
        errors = await server.new_error(seen)
        line = errors[-1]
        assert len(errors) == seen + 1, errors
        assert line.startswith("Error: reload failed") and expected in line, line
        assert path.name in line, line
        # The old agent still serves: the open session and a new one.
        assert await stamp(client, session) == "[tool-v1|helper-v1]"
        other = await client.create_session()
        assert await stamp(client, other) == "[tool-v1|helper-v1]"
        await client.send({"event": "user.end_session", "session_id": other})
        await client.expect("agent.session_end", session_id=other)
        assert len(server.errors()) == seen + 1, server.errors()  # one line, no more
    assert not any(
        e["event"] == "agent.session_end" and e["session_id"] == session for e in client.received
    )

    # Fixing both files serves what the broken edits meant, at once.
    write(helper, HELPER.format(helper="helper-v2"))
    took = await reloaded(client, session, since=write(agent_file, AGENT.format(tool="tool-v2")))
    fixed = await client.create_session()
    assert await stamp(client, fixed) == "[tool-v2|helper-v2]"
    assert "Traceback" not in server.errors_text()
    print(f"reload latency after a fix: {took * 1000:.0f} ms")


def test_reload_is_a_setting_with_its_own_environment_variable(tmp_path):
    """MYAGENT_WS_RELOAD=1 turns it on like --reload; the banner names what is watched."""
    plain = tmp_path / "plain_agent.py"
    text = AGENT.replace("from helper import decorate\n", "")
    write(plain, text.replace('decorate("{tool}")', '"plain"'))
    server = ReloadServer(tmp_path, str(plain), env={"MYAGENT_WS_RELOAD": "1"})
    server.stop()
    assert f"reload: on, watching {plain}\n" in server.output(), server.output()
    assert server.proc.returncode == 0
    assert not [line for line in server.errors() if "Error" in line], server.errors()


async def test_every_process_on_one_redis_reloads_and_ends_what_it_serves_once(
    cluster_factory, connect, tmp_path
):
    """Two processes sharing Redis, each with --reload: each serves the new agent, a
    session held by both ends once, and a session no process holds (its client gone)
    gets the new agent when it is next used."""
    agent_file = tmp_path / "stamp_agent.py"
    write(agent_file, AGENT.format(tool="tool-v1"))
    write(tmp_path / "helper.py", HELPER.format(helper="helper-v1"))
    cluster = await cluster_factory(2, args=(str(agent_file), "--reload"))
    a, b, away = [await connect(node) for node in (cluster[0], cluster[1], cluster[1])]
    own = await a.create_session()
    shared = await a.create_session()
    await b.reconnect(shared, 0)
    await b.expect("agent.session_resumed", session_id=shared)
    left = await away.create_session()
    assert await stamp(away, left) == "[tool-v1|helper-v1]"
    await away.ws.close()

    edited = write(agent_file, AGENT.format(tool="tool-v2"))
    await reloaded(a, own, shared, since=edited)
    await reloaded(b, shared, since=edited)
    for client in (a, b):
        # Each process reloads on its own: its notice says this one serves the new tool
        # (the end of `shared` may come to b from a's process first, through Redis).
        await notices(client, 1)
        assert await stamp(client, await client.create_session()) == "[tool-v2|helper-v1]"
    for client in (a, b):
        ends = [e for e in client.received if e["event"] == "agent.session_end"]
        assert [e["session_id"] for e in ends].count(shared) == 1, ends
    late = await connect(cluster[0])
    await late.reconnect(left, 0)
    await late.expect("agent.session_resumed", session_id=left)
    assert await stamp(late, left) == "[tool-v2|helper-v1]"
