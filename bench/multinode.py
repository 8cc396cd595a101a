"""Real `myagent-ws server` processes sharing one Redis store, for bench/chaos.py and
bench/redis_bench.py: N processes on free loopback ports under a fresh key prefix, stopped
with SIGTERM and then SIGKILL after a bound, and the prefix's keys deleted afterwards (also
on failure or Ctrl-C). tests/cluster.py builds its test clusters on the same Node and
helpers; bench/redis_stats.py reads Redis's own figures.

The shared Redis is never flushed: every run works under a prefix of its own,
`myagent-ws-bench:<12 hex>:` (`myagent-ws-test:` for the tests), and deletes only the keys
under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from uuid import uuid4

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
WEATHER = str(ROOT / "examples" / "ws_weather_agent.py")
REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 30.0
TERM_GRACE_S = 10.0  # after SIGTERM, before SIGKILL
KILL_WAIT_S = 5.0
# How NodeSet stops its nodes: each signal to every node, then up to that long for them all
# to exit.
STOP_STEPS = ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, KILL_WAIT_S))
# The environment a node does not inherit: no LLM endpoint and no server setting comes
# from the shell running the bench or the tests (the offline model serves unless a flag
# says otherwise); what a node should have is passed to it.
NOT_INHERITED = re.compile(r"OPENAI_\w+|MYAGENT\w*")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A node's environment: this process's, less NOT_INHERITED, plus `extra`."""
    inherited = {k: v for k, v in os.environ.items() if not NOT_INHERITED.fullmatch(k)}
    return {**inherited, **(extra or {})}


def fresh_prefix(owner: str = "bench") -> str:
    """A Redis key prefix no other run (or test) uses: `myagent-ws-<owner>:<12 hex>:`."""
    return f"myagent-ws-{owner}:{uuid4().hex[:12]}:"


def loopback_redis(url: str) -> str:
    """`url`, if it names a Redis on the loopback interface (the bench talks to nothing
    else); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the bench uses a Redis on 127.0.0.1 only, not {url!r}")
    return url


def free_port(taken: Collection[int] = ()) -> int:
    """A port the kernel says is free on 127.0.0.1, not one of `taken`."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise RuntimeError("no free loopback port in 50 tries")


def glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def redis_ping(url: str = REDIS_URL, timeout_s: float = 1.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def delete_prefix(url: str, prefix: str, max_keys: int = 10_000_000) -> int:
    """Delete every key under `prefix` (SCAN + UNLINK, bounded); how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)
    deleted, batch = 0, []
    try:
        for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch = []
            if deleted >= max_keys:
                break
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted


async def exit_status(proc: subprocess.Popen[Any], timeout_s: float) -> int | None:
    """Its exit status once it has exited, or None after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return proc.poll()


async def end_process(proc: subprocess.Popen[Any], sig: int, grace: float) -> None:
    """`sig`, then the same again after `grace` s (a second SIGTERM skips a server's drain),
    then SIGKILL 10 s later: every step bounded."""
    for step, wait in ((sig, grace), (sig, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(step)
        if await exit_status(proc, wait) is not None:
            return


# The waits below take a `timeout` in seconds, the name the tests call them with.
class Node:
    """One real `myagent-ws server` process serving `args` (agent files, more flags) on a
    loopback port, optionally pinned to `cpus`; what it prints goes to a log file in
    `logdir` (a pipe nobody drains would block it)."""

    def __init__(self, index: int, port: int, args: list[str], env: dict[str, str],
                 logdir: Path, *, cpus: set[int] | None = None,
                 python: str = sys.executable) -> None:  # fmt: skip
        self.index = index
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.http = f"http://127.0.0.1:{port}"
        self.address = f"127.0.0.1:{port}"
        self.health: dict[str, Any] = {}
        self.log_path = logdir / f"node{index}-{port}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        argv = [python, "-m", "myagent_ws", "server", *args]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        if cpus is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, cpus)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def node_id(self) -> str | None:
        """The "node" field of its /health (after wait_health)."""
        return self.health.get("node")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, chars: int | None = None) -> str:
        """What it has printed so far (only the last `chars` bytes of it, if given)."""
        with contextlib.suppress(OSError, ValueError):
            if not self._log.closed:
                self._log.flush()
            data = self.log_path.read_bytes()
            return (data[-chars:] if chars else data).decode(errors="replace")
        return ""

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:  # noqa: ASYNC109
        """(status, JSON body or text) of a GET on this node."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(self.http + path) as response,
        ):
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = await response.text()
            return response.status, body

    async def wait_health(self, timeout: float = START_TIMEOUT_S,  # noqa: ASYNC109
                          path: str = "/health") -> dict[str, Any]:  # fmt: skip
        """Poll `path` until it answers 200 (then keep its JSON in .health for /health);
        fail with the node's output if it exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"node {self.index} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                status, body = await self.get(path, timeout=2.0)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = exc
            else:
                last = (status, body)
                if status == 200:
                    if path == "/health":
                        self.health = body
                    return body
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"node {self.index} did not answer 200 on {path} in {timeout} s (last: {last!r}):\n"
            f"{self.output()}"
        )

    async def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:  # noqa: ASYNC109
        return await self.wait_health(timeout, path="/ready")

    def send_signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)  # a process that has just exited is skipped

    async def wait_exit(self, timeout: float = 45.0) -> int:  # noqa: ASYNC109
        status = await exit_status(self.proc, timeout)
        if status is None:
            raise TimeoutError(f"node {self.index} still runs after {timeout} s")
        return status

    async def stop(self, sig: int = signal.SIGTERM, grace: float = 2.0) -> None:
        """End it as end_process does, then close its log."""
        await end_process(self.proc, sig, grace)
        self.close_log()

    def close_log(self) -> None:
        with contextlib.suppress(OSError):
            self._log.close()


class NodeSet:
    """`count` server processes serving `args` (agent files, more flags) on the Redis store
    at `store_url` under `prefix` (fresh by default). Use as `async with`: stop() runs on
    the way out, whatever happened; `NodeSet.stop_all_now()` is the synchronous last resort
    (e.g. in a `finally` after Ctrl-C broke the event loop)."""

    live: list[NodeSet] = []

    def __init__(self, count: int, args: list[str] | None = None, *,
                 store_url: str = REDIS_URL, prefix: str | None = None,
                 logdir: Path | None = None, cpus: set[int] | None = None,
                 python: str = sys.executable) -> None:  # fmt: skip
        self.count = count
        self.store_url = loopback_redis(store_url)
        self.prefix = prefix or fresh_prefix()
        self.args = list(args if args is not None else [WEATHER])
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="myagent-ws-bench-nodes-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.python = python
        self.nodes: list[Node] = []
        self._stopped = False

    @property
    def urls(self) -> list[str]:
        return [node.url + "/" for node in self.nodes]

    async def __aenter__(self) -> NodeSet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> NodeSet:
        if not redis_ping(self.store_url):
            raise RuntimeError(f"no Redis answers at {self.store_url}")
        NodeSet.live.append(self)
        env = node_env()
        args = [*self.args, "--store", self.store_url, "--store-prefix", self.prefix]
        taken: set[int] = set()
        for index in range(self.count):
            port = free_port(taken)
            taken.add(port)
            self.nodes.append(
                Node(index, port, args, env, self.logdir, cpus=self.cpus, python=self.python)
            )
        # Ready (its store reachable), then its /health for the node id.
        await asyncio.gather(*(node.wait_ready(timeout_s) for node in self.nodes))
        await asyncio.gather(*(node.wait_health(timeout_s) for node in self.nodes))
        return self

    def log_lines(self, pattern: str = r"\b(WARNING|ERROR|CRITICAL|Traceback)\b") -> list[str]:
        """Lines of every node's output that match `pattern` (warnings and errors)."""
        found = re.compile(pattern)
        return [
            f"node {node.index}: {line}"
            for node in self.nodes
            for line in node.output(1_000_000).splitlines()
            if found.search(line)
        ]

    async def stop(self) -> None:
        """SIGTERM every node, SIGKILL those still up after TERM_GRACE_S, then delete the
        prefix's keys. Bounded; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for sig, wait_s in STOP_STEPS:
                deadline = self._signal_all(sig, wait_s)
                while self._waiting(deadline):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except asyncio.CancelledError:  # cancelled while waiting: no more waiting
            self._signal_all(signal.SIGKILL, 0.0)
            raise
        finally:
            self._finish()

    def stop_now(self) -> None:
        """The same, synchronously (no event loop needed)."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait_s in STOP_STEPS:
            deadline = self._signal_all(sig, wait_s)
            while self._waiting(deadline):
                time.sleep(0.05)
        self._finish()

    def _signal_all(self, sig: int, wait_s: float) -> float:
        """Send `sig` to every node; the deadline for them to exit after it."""
        for node in self.nodes:
            node.send_signal(sig)
        return time.monotonic() + wait_s

    def _waiting(self, deadline: float) -> bool:
        """Whether a node is still up and `deadline` not yet passed."""
        return any(n.alive() for n in self.nodes) and time.monotonic() < deadline

    def _finish(self) -> None:
        for node in self.nodes:
            node.close_log()
        with contextlib.suppress(ValueError):
            NodeSet.live.remove(self)
        with contextlib.suppress(Exception):
            delete_prefix(self.store_url, self.prefix)

    @classmethod
    def stop_all_now(cls) -> None:
        for nodes in reversed(list(cls.live)):
            nodes.stop_now()
