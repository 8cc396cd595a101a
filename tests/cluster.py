"""Real multi-process clusters for tests: N `myagent-ws server` processes, each on its own
loopback port, sharing a Redis store under a key prefix of their own (or each with its
memory store), and a real nginx from deploy/nginx.conf in front of them.

Redis is expected on 127.0.0.1:6379 and nginx on PATH or at /usr/sbin/nginx (.ci/run
installs and starts both). Without them a test is skipped, except in CI (CI=true), where it
fails. The fixtures `cluster_factory` and `nginx_factory` in tests/conftest.py start and
stop these. A node is bench/multinode.py's Node, the process the bench's multi-process runs
start too, and the free ports, key prefixes and Redis helpers are that module's."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from bench import multinode
from bench.multinode import (
    REDIS_URL,
    ROOT,
    WEATHER,
    Node,
    delete_prefix,
    end_process,
    free_port,
    glob_escape,
    in_ci,
    node_env,
    redis_ping,
)

NGINX_CONF = ROOT / "deploy" / "nginx.conf"

# What deploy/nginx.conf says that a test replaces (and nothing else): the port nginx
# listens on, and the upstream's `server app:8080;` line(s), which become one line per node.
NGINX_LISTEN = re.compile(r"^([ \t]*)listen[ \t]+80;[^\n]*$", re.M)
NGINX_UPSTREAM = re.compile(r"^([ \t]*)server[ \t]+app:8080;[^\n]*$", re.M)


def unavailable(what: str) -> NoReturn:
    """Skip the test for lack of `what`; in CI, where .ci/run provides it, fail it."""
    if in_ci():
        pytest.fail(f"{what} (CI must have it: .ci/run installs and starts it)")
    pytest.skip(what)


def redis_available(timeout: float = 1.0) -> bool:
    """Whether a Redis answers PING at REDIS_URL (127.0.0.1:6379)."""
    return redis_ping(REDIS_URL, timeout)


def require_redis() -> None:
    if not redis_available():
        unavailable(f"no Redis answers PING at {REDIS_URL}")


def nginx_binary() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on a non-root PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def require_nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        unavailable("nginx is not installed (Debian package nginx)")
    return binary


def fresh_prefix() -> str:
    """A Redis key prefix no other test (or run) uses: `myagent-ws-test:<12 hex>:`."""
    return multinode.fresh_prefix("test")


async def redis_keys(prefix: str, url: str = REDIS_URL) -> list[str]:
    """Every key under `prefix`."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=glob_escape(prefix) + "*", count=500)]
    finally:
        await client.aclose()


async def delete_keys(prefix: str, url: str = REDIS_URL) -> int:
    """Delete every key under `prefix`; how many there were."""
    return await asyncio.to_thread(delete_prefix, url, prefix)


class Cluster:
    """`size` real server processes serving `args` (agent files, more flags). With `store`
    a Redis URL (the default), every node gets `--store URL --store-prefix PREFIX`, the
    prefix fresh for this cluster; with store=None each node keeps its memory store.

    cluster[i] is a Node (url, http, port, proc, node_id, output()); kill(i, sig) signals
    one; stop() ends every process and deletes the prefix's Redis keys."""

    def __init__(
        self,
        size: int,
        args: Iterable[str] = (WEATHER,),
        *,
        store: str | None = REDIS_URL,
        prefix: str | None = None,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.size = size
        self.store = store
        self.prefix = prefix or fresh_prefix()
        self.args = list(args)
        if store is not None:
            self.args += ["--store", store, "--store-prefix", self.prefix]
        self.env = node_env(env)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="myagent-ws-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []
        self._stopped = False

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def uses_redis(self) -> bool:
        return self.store is not None and self.store.startswith(("redis://", "rediss://"))

    async def start(self, timeout: float = 30.0) -> Cluster:
        """Start every node at once and wait until each answers /health."""
        if self.uses_redis:
            require_redis()
        for _ in range(self.size):
            self._spawn()
        await asyncio.gather(*(node.wait_health(timeout) for node in self.nodes))
        return self

    def _spawn(self) -> Node:
        port = free_port({node.port for node in self.nodes})
        node = Node(len(self.nodes), port, self.args, self.env, self.workdir)
        self.nodes.append(node)
        return node

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every live node answers /ready with 200."""
        await asyncio.gather(*(n.wait_ready(timeout) for n in self.nodes if n.alive()))

    def kill(self, index: int, sig: int = signal.SIGKILL) -> Node:
        """Send `sig` (SIGKILL by default: no drain, no goodbye) to node `index`."""
        node = self.nodes[index]
        node.send_signal(sig)
        return node

    async def keys(self) -> list[str]:
        """The Redis keys under this cluster's prefix."""
        assert self.uses_redis, "this cluster has no Redis store"
        return await redis_keys(self.prefix, self.store or REDIS_URL)

    def outputs(self) -> str:
        """Every node's output, for an assertion message."""
        return "\n".join(f"--- node {n.index} ({n.address})\n{n.output()}" for n in self.nodes)

    async def stop(self) -> None:
        """End every process (SIGTERM, a second one to skip a drain, then SIGKILL; bounded)
        and delete every Redis key under the prefix. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.gather(*(node.stop() for node in self.nodes))
        if self.uses_redis and redis_available():
            await delete_keys(self.prefix, self.store or REDIS_URL)


def nginx_config(text: str, listen_port: int, servers: Iterable[str]) -> str:
    """deploy/nginx.conf with only its listen port (127.0.0.1:`listen_port`) and its
    upstream servers (one `server ADDRESS;` line each) replaced. Fails when either was not
    found, so the file cannot drift away from what the tests run."""
    servers = list(servers)
    assert servers, "nginx needs at least one upstream server"
    text, listens = NGINX_LISTEN.subn(rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    if listens == 0:
        raise AssertionError("deploy/nginx.conf has no `listen 80;` line to replace")
    replaced = 0

    def upstream(match: re.Match[str]) -> str:
        nonlocal replaced
        replaced += 1
        if replaced > 1:  # every server line becomes the first one's list
            return f"{match[1]}# (replaced by the test)"
        return "\n".join(f"{match[1]}server {address};" for address in servers)

    text = NGINX_UPSTREAM.sub(upstream, text)
    if replaced == 0:
        raise AssertionError("deploy/nginx.conf has no `server app:8080;` line to replace")
    return text


class Nginx:
    """A real nginx from deploy/nginx.conf in a prefix directory of its own, listening on a
    free loopback port, with `backends` (a Cluster, Nodes, or "host:port" strings) as its
    upstream servers."""

    def __init__(
        self, backends: Iterable[Any], workdir: Path | None = None, conf: Path = NGINX_CONF
    ) -> None:
        self.binary = require_nginx()
        self.servers = [b if isinstance(b, str) else f"127.0.0.1:{b.port}" for b in backends]
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.prefix = workdir or Path(tempfile.mkdtemp(prefix="myagent-ws-nginx-"))
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(
            nginx_config(conf.read_text(encoding="utf-8"), self.port, self.servers),
            encoding="utf-8",
        )
        self.log_path = self.prefix / "nginx.log"
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def command(self, *extra: str) -> list[str]:
        # -e stderr: nginx opens its error log before reading the file, and the compiled-in
        # path needs root.
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr", *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t` on the rendered file."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def output(self) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _spawn(self) -> subprocess.Popen[str]:
        self._log = open(self.log_path, "w", encoding="utf-8")
        return subprocess.Popen(
            self.command("-g", "daemon off;"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def start(self, timeout: float = 10.0) -> Nginx:
        """Run it in the foreground and wait until its port accepts connections."""
        self.proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.output()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return self
        raise AssertionError(
            f"nginx did not listen on {self.port} in {timeout} s:\n{self.output()}"
        )

    async def stop(self) -> None:
        """Fast shutdown (SIGTERM: open WebSockets are cut, not waited for), bounded."""
        if self.proc is not None:
            await end_process(self.proc, signal.SIGTERM, 5.0)
        if self._log is not None:
            self._log.close()
