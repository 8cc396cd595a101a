"""Built wheels (host and plugins), installed with their dependencies into a directory that
is the only place Python imports from, find their schemas and serve agents."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.client import TERMINAL, WsClient
from tests.conftest import EXAMPLES, ROOT, WEATHER, CliServer, free_port

# -S: no site-packages, so only what was installed into the target directory is importable.
PYTHON = [sys.executable, "-S"]
PLUGINS = (ROOT / "plugins" / "weather", ROOT / "plugins" / "calculator")

# Every file in examples/: the agent it serves and a question the offline model can answer.
EXAMPLE_TURNS = {
    "my_agent.py": ("greeter", "Please greet Ada", "Hello, Ada!"),
    "ws_weather_agent.py": ("weather-assistant", "北京今天天气怎么样？", "25°C"),
    # Its tool asks first: the test approves every agent.user_confirm.
    "booking_agent.py": ("booking-assistant", "Book a table for 2 at Luigi at 19:30", "#1"),
}


def run(*command: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def build_wheel(project: Path, wheels: Path) -> Path:
    """The wheel of one project (without its dependencies), built into `wheels`."""
    before = set(wheels.glob("*.whl"))
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(wheels),
        str(project),
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = set(wheels.glob("*.whl")) - before
    return wheel


def install(target: Path, *wheels: Path) -> Path:
    """`target`, with `wheels` and their dependencies installed into it (and nothing else)."""
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--ignore-installed",
        "--target",
        str(target),
        *map(str, wheels),
    )
    assert installed.returncode == 0, installed.stderr
    return target


def only(target: Path) -> dict[str, str]:
    """The environment in which `python -S` imports from `target` alone; read when called,
    so it has no LLM settings (the autouse fixture removed them: the offline model answers)."""
    return {**os.environ, "PYTHONPATH": str(target)}


@pytest.fixture(scope="module")
def host_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own wheel (what `pip install .` installs), built once per module."""
    return build_wheel(ROOT, tmp_path_factory.mktemp("host-wheel"))


@pytest.fixture(scope="module")
def host_only(tmp_path_factory: pytest.TempPathFactory, host_wheel: Path) -> Path:
    """Where a plain `pip install .` put things: the host and its dependencies, no plugin."""
    return install(tmp_path_factory.mktemp("host-site"), host_wheel)


def test_wheels_ship_schemas_and_serve_agents_outside_the_source_tree(tmp_path, host_wheel):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    plugin_wheels = [build_wheel(project, wheels) for project in PLUGINS]
    shipped = zipfile.ZipFile(host_wheel).namelist()
    schema_files = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert schema_files and all(f"myagent_ws/schemas/{name}" in shipped for name in schema_files)

    target = tmp_path / "site"
    env = only(install(target, host_wheel, *plugin_wheels))

    probe = (
        "import json, myagent_ws, myagent, myagent_ws_weather; from myagent_ws.protocol import"
        ' Protocol; p = Protocol(); p.decode(\'{"event": "user.create_session"}\');'
        "print(json.dumps([m.__file__ for m in (myagent_ws, myagent, myagent_ws_weather)]"
        " + [len(p.schemas)]))"
    )
    result = run(*PYTHON, "-c", probe, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    *files, count = json.loads(result.stdout)
    assert all(path.startswith(str(target)) for path in files), files
    assert count == len(schema_files)

    from_file = run(*PYTHON, "-m", "myagent_ws", "agents", WEATHER, cwd=tmp_path, env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert "weather-assistant" in from_file.stdout

    # The plugins, installed from their wheels, are found through their entry points.
    served = run(
        *PYTHON,
        "-m",
        "myagent_ws",
        "agents",
        "--plugin",
        "weather",
        "--plugin",
        "calculator",
        cwd=tmp_path,
        env=env,
    )
    assert served.returncode == 0, served.stderr
    rows = served.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["weather-assistant", "calculator"]


class InstalledServer(CliServer):
    """`python -S -m myagent_ws server FILE` on a free loopback port, importing only what
    `env` installed; started from `cwd`, away from the source tree. Shares CliServer's
    wait_ready and stop (SIGINT, then kill)."""

    def __init__(self, agent_file: Path, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        command = [*PYTHON, "-m", "myagent_ws", "server", str(agent_file)]
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


async def approving_turn(client: WsClient, session_id: str, text: str) -> list[dict]:
    """One turn's events, approving each tool call that asks."""
    await client.send({"event": "user.message", "session_id": session_id, "content": text})
    events: list[dict] = []
    async with asyncio.timeout(20):
        while not events or events[-1]["event"] not in TERMINAL:
            events.append(await client.recv(timeout=20))
            if events[-1]["event"] == "agent.user_confirm":
                answer = {"event": "user.response", "content": {"approved": True}}
                answer.update(session_id=session_id, step_id=events[-1]["step_id"])
                await client.send(answer)
    return [e for e in events if e.get("session_id") == session_id]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
async def test_every_example_serves_with_only_the_project_installed(
    example: Path, host_only: Path, tmp_path: Path, connect: Any
) -> None:
    assert example.name in EXAMPLE_TURNS, f"add {example.name} to EXAMPLE_TURNS"
    agent, question, answer = EXAMPLE_TURNS[example.name]
    env = only(host_only)

    listed = run(*PYTHON, "-m", "myagent_ws", "agents", str(example), cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == [agent]

    server = InstalledServer(example, env, tmp_path)
    try:
        server.wait_ready(timeout=20)
        client = await connect(server)
        await client.send({"event": "user.create_session"})
        created = await client.expect("agent.session_created", timeout=10)
        assert created["content"]["agent"] == agent, created
        events = await approving_turn(client, created["session_id"], question)
    finally:
        output = server.stop()
        print(output)  # shown by pytest when the test fails
    final = events[-1]
    assert final["event"] == "agent.final_answer", (events, output)
    assert answer in final["content"], final
