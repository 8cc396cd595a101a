"""Fixtures that start real things: the app on a loopback port, real WebSocket clients,
a local OpenAI-compatible server, and the real console script as a subprocess."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.multinode import free_port
from myagent_ws.app import create_app
from myagent_ws.loader import load_agent_files, spec_for
from myagent_ws.registry import AgentRegistry
from myagent_ws.settings import Settings
from tests.client import WsClient
from tests.fake_openai import fake_openai  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WEATHER = str(EXAMPLES / "ws_weather_agent.py")
GREETER = str(EXAMPLES / "my_agent.py")
BOOKING = str(EXAMPLES / "booking_agent.py")
BEIJING = "北京今天天气怎么样？"  # a weather question the offline model answers
ASK = "Book a table for 2 at Luigi at 19:30"  # a booking that asks for confirmation
# The console script installed beside this Python.
CLI = str(Path(sys.executable).parent / "myagent-ws")
CLUSTER_AGENT = str(ROOT / "tests" / "fixtures" / "cluster_agent.py")
# Principal -> token, for the tokens_file fixture.
TOKENS = {"alice": "alice-secret-token-1", "bob": "bob-secret-token-2"}


def reference(name: str) -> Path:
    """The project's shared reference (seed README, PROTOCOL.md): the live copy beside the
    checkout when there is one (CI has it), else the snapshot in docs/reference/."""
    live = ROOT.parent / "shared" / name
    return live if live.exists() else ROOT / "docs" / "reference" / name


@pytest.fixture(autouse=True)
def _offline_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a real LLM by accident: no endpoint is configured unless a test says so."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MYAGENT_MODEL"):
        monkeypatch.delenv(name, raising=False)


def make_registry(files: tuple[str, ...] = (), agents: tuple[Any, ...] = ()) -> AgentRegistry:
    registry = AgentRegistry()
    for spec in load_agent_files(list(files)):
        registry.add(spec)
    for agent in agents:
        registry.add(spec_for(agent.clone, f"test:{agent.name}"))
    return registry


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    """A --auth-tokens-file naming TOKENS (a comment line and a blank line first, which the
    parser skips)."""
    path = tmp_path / "tokens"
    lines = ["# principal:token", ""] + [f"{name}:{token}" for name, token in TOKENS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def serve(aiohttp_server: Any) -> Callable[..., Any]:
    """serve(files=..., agents=..., model=..., store=..., **settings) -> a running TestServer."""

    async def start(
        files: tuple[str, ...] = (WEATHER,),
        agents: tuple[Any, ...] = (),
        model: Any = None,
        default: str | None = None,
        store: Any = None,
        **overrides: Any,
    ) -> Any:
        registry = make_registry(files, agents)
        if default:
            registry.set_default(default)
        settings = dataclasses.replace(Settings(host="127.0.0.1", port=0), **overrides)
        return await aiohttp_server(create_app(settings, registry, model=model, store=store))

    return start


@pytest.fixture
async def connect() -> Any:
    """connect(server, **ws_connect_options) -> a WsClient that has already received
    system.connected. `server` is a TestServer from `serve` or a CliServer from `cli_server`."""
    async with aiohttp.ClientSession() as http:

        async def open_client(server: Any, path: str = "/", **options: Any) -> WsClient:
            url = server.make_url(path) if hasattr(server, "make_url") else server.url + path
            ws = await http.ws_connect(url, **options)
            client = WsClient(ws)
            first = await client.recv()
            assert first["event"] == "system.connected"
            return client

        yield open_client


def python_output(script: str) -> str:
    """The stdout of `script` run by this Python in a fresh process (for what changes
    process-wide state: limits, the garbage collector, the event loop)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


class CliServer:
    """The real `myagent-ws server` console script in a subprocess on a free port."""

    def __init__(self, args: list[str], env: dict[str, str] | None, host: str) -> None:
        self.port = free_port()
        self.url = f"ws://{host}:{self.port}"
        self.http = f"http://{host}:{self.port}"
        command = [
            CLI,
            "server",
            *args,
            "--host",
            host,
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server did not start listening in time")

    def stop(self, sig: int | None = None, drain_s: float = 2.0) -> str:
        """Stop it (SIGINT, like Ctrl-C, by default), then return everything it printed.
        A server still up after `drain_s` (draining running turns, which may take
        drain_timeout_s) gets a second Ctrl-C, which skips the rest of the drain; one still
        up 15 s later is killed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGINT)
            try:
                self.proc.wait(timeout=drain_s)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        return self.proc.stdout.read()


@pytest.fixture
def cli_server() -> Iterator[Callable[..., CliServer]]:
    started: list[CliServer] = []

    def start(*args: str, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> CliServer:
        server = CliServer(list(args), env, host)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> Any:
    """cluster_factory(size=3, args=(WEATHER,), store=REDIS_URL, env=None) -> a started
    tests.cluster.Cluster: `size` real server processes (Redis store under a fresh key
    prefix; store=None for memory stores). Each is stopped, and the prefix's Redis keys
    deleted, after the test."""
    from tests.cluster import Cluster

    started: list[Any] = []

    async def start(size: int = 3, args: tuple[str, ...] = (WEATHER,), **options: Any) -> Any:
        cluster = Cluster(size, args, workdir=tmp_path / f"cluster{len(started)}", **options)
        started.append(cluster)
        return await cluster.start()

    yield start
    for cluster in started:
        await cluster.stop()


@pytest.fixture
async def nginx_factory(tmp_path: Path) -> Any:
    """nginx_factory(backends) -> a started tests.cluster.Nginx: deploy/nginx.conf with
    only its listen port and upstream servers filled in, in front of `backends` (a Cluster,
    its Nodes, or "host:port" strings). Stopped after the test."""
    from tests.cluster import Nginx

    started: list[Any] = []

    async def start(backends: Any) -> Any:
        nginx = Nginx(backends, workdir=tmp_path / f"nginx{len(started)}")
        started.append(nginx)
        return await nginx.start()

    yield start
    for nginx in started:
        await nginx.stop()
