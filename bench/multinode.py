"""Real `myagent-ws server` processes sharing one Redis store, for bench/chaos.py and
bench/run.py: N processes on free loopback ports under a fresh key prefix, stopped with
SIGTERM and then SIGKILL after a bound, and the prefix's keys deleted afterwards (also on
failure or Ctrl-C); plus the Redis figures the bench reads (INFO commandstats, INFO cpu).

The shared Redis is never flushed: every run works under a prefix of its own,
`myagent-ws-bench:<8 hex>:`, and deletes only the keys under it.
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
# The environment a node does not inherit: no LLM endpoint and no server setting comes
# from the shell running the bench (the offline model serves unless a flag says otherwise).
NOT_INHERITED = re.compile(r"OPENAI_\w+|MYAGENT\w*")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def fresh_prefix() -> str:
    return f"myagent-ws-bench:{uuid4().hex[:8]}:"


def loopback_redis(url: str) -> str:
    """`url`, if it names a Redis on the loopback interface (the bench talks to nothing
    else); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the bench uses a Redis on 127.0.0.1 only, not {url!r}")
    return url


def free_port(taken: set[int]) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise RuntimeError("no free loopback port in 50 tries")


def _glob_escape(text: str) -> str:
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
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
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


class RedisProbe:
    """One connection to Redis for the bench's own questions (INFO), opened once, so its
    connection handshake does not show up among the commands being counted."""

    def __init__(self, url: str = REDIS_URL) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.client.ping()

    def commands(self) -> dict[str, int]:
        """Calls per command since Redis started (INFO commandstats), e.g. {"evalsha": 12}.
        Redis 7 also counts the commands a Lua script runs, under their own names."""
        info = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if isinstance(stats, dict) and "calls" in stats
        }

    def cpu_s(self) -> float:
        """Redis's own CPU time (user + system), from INFO cpu."""
        info = self.client.info("cpu")
        return float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))

    def close(self) -> None:
        self.client.close()


MONITOR_LINE = re.compile(r'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]*)"(.*)$')


class Monitor:
    """Redis MONITOR in a thread, to tell a node's own round trips from the commands its
    Lua scripts run (INFO commandstats counts both alike). MONITOR costs Redis time: the
    bench runs it in a phase of its own, never while it measures speed. `mark(name)`
    sends ECHO <prefix><name>, which the capture shows in order with everything else."""

    def __init__(self, url: str, prefix: str, max_bytes: int = 256 << 20,
                 max_s: float = 300.0) -> None:  # fmt: skip
        import threading

        parts = urlsplit(loopback_redis(url))
        self.address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.prefix = prefix
        self.max_bytes, self.max_s = max_bytes, max_s
        self._stop = threading.Event()
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._sock: socket.socket | None = None
        self._marker: Any = None

    def start(self) -> None:
        import redis

        self._sock = socket.create_connection(self.address, timeout=2)
        self._sock.sendall(b"MONITOR\r\n")
        self._sock.settimeout(0.2)
        host, port = self.address
        self._marker = redis.Redis(host=host, port=port, socket_timeout=5)
        self._thread.start()

    def mark(self, name: str) -> None:
        assert self._marker is not None
        self._marker.echo(f"{self.prefix}{name}")

    def _read(self) -> None:
        assert self._sock is not None
        deadline, size = time.monotonic() + self.max_s, 0
        while not self._stop.is_set() and time.monotonic() < deadline and size < self.max_bytes:
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self._chunks.append(data)
            size += len(data)

    def stop(self) -> list[tuple[float, str, str, str]]:
        """Stop capturing; the lines as (time, client address or "lua", command, args)."""
        self._stop.set()
        self._thread.join(timeout=5)
        for closable in (self._sock, self._marker):
            with contextlib.suppress(Exception):
                if closable is not None:
                    closable.close()
        lines = []
        for raw in b"".join(self._chunks).split(b"\r\n"):
            match = MONITOR_LINE.match(raw.decode(errors="replace"))
            if match:
                stamp, who, command, args = match.groups()
                lines.append((float(stamp), who, command.lower(), args))
        return lines

    def split(self, lines: list[tuple[float, str, str, str]], start: str,
              end: str) -> tuple[dict[str, int], dict[str, int], float]:  # fmt: skip
        """Between the marks `start` and `end`: (round trips by command, script commands by
        command, seconds), counting only the clients that used this prefix (the nodes) and
        the scripts they ran (a script's commands follow its EVALSHA, nothing between)."""
        ours = {who for _, who, _, args in lines if who != "lua" and self.prefix in args}
        ours -= {who for _, who, command, args in lines if command == "echo"}  # the marks
        trips: dict[str, int] = {}
        scripted: dict[str, int] = {}
        inside, t0, t1, caller_ours = False, 0.0, 0.0, False
        for stamp, who, command, args in lines:
            if command == "echo" and f"{self.prefix}{start}" in args:
                inside, t0 = True, stamp
                continue
            if command == "echo" and f"{self.prefix}{end}" in args:
                t1 = stamp
                break
            if not inside:
                continue
            if who == "lua":
                if caller_ours:
                    scripted[command] = scripted.get(command, 0) + 1
                continue
            caller_ours = who in ours
            if caller_ours:
                trips[command] = trips.get(command, 0) + 1
        return trips, scripted, max(t1 - t0, 1e-9)


class NodeProc:
    """One server process; what it prints goes to a log file (a pipe nobody drains would
    block it)."""

    def __init__(self, index: int, port: int, argv: list[str], env: dict[str, str],
                 logdir: Path, cpus: set[int] | None) -> None:  # fmt: skip
        self.index = index
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"
        self.http = f"http://127.0.0.1:{port}"
        self.node_id = ""
        self.log_path = logdir / f"node{index}-{port}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
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

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, chars: int = 1_000_000) -> str:
        with contextlib.suppress(OSError, ValueError):
            if not self._log.closed:
                self._log.flush()
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        return ""

    async def wait_health(self, http: aiohttp.ClientSession, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"node {self.index} exited with {self.proc.returncode}:\n{self.output(3000)}"
                )
            try:
                async with http.get(self.http + "/ready") as response:
                    last = response.status
                    if response.status == 200:
                        async with http.get(self.http + "/health") as health:
                            self.node_id = (await health.json()).get("node") or ""
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = exc
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"node {self.index} not ready in {timeout_s} s (last: {last!r}):\n{self.output(3000)}"
        )

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

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
        self.nodes: list[NodeProc] = []
        self.deleted_keys = 0
        self._stopped = False

    def __getitem__(self, index: int) -> NodeProc:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def __aenter__(self) -> NodeSet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> NodeSet:
        if not redis_ping(self.store_url):
            raise RuntimeError(f"no Redis answers at {self.store_url}")
        NodeSet.live.append(self)
        env = {k: v for k, v in os.environ.items() if not NOT_INHERITED.fullmatch(k)}
        taken: set[int] = set()
        for index in range(self.count):
            port = free_port(taken)
            taken.add(port)
            argv = [self.python, "-m", "myagent_ws", "server", *self.args]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            argv += ["--store", self.store_url, "--store-prefix", self.prefix]
            self.nodes.append(NodeProc(index, port, argv, env, self.logdir, self.cpus))
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(node.wait_health(http, timeout_s) for node in self.nodes))
        return self

    def log_lines(self, pattern: str = r"\b(WARNING|ERROR|CRITICAL|Traceback)\b") -> list[str]:
        """Lines of every node's output that match `pattern` (warnings and errors)."""
        found = re.compile(pattern)
        return [
            f"node {node.index}: {line}"
            for node in self.nodes
            for line in node.output().splitlines()
            if found.search(line)
        ]

    async def stop(self) -> None:
        """SIGTERM every node, SIGKILL those still up after TERM_GRACE_S, then delete the
        prefix's keys. Bounded; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for node in self.nodes:
                node.signal(signal.SIGTERM)
            for sig, wait_s in ((None, TERM_GRACE_S), (signal.SIGKILL, KILL_WAIT_S)):
                if sig is not None:
                    for node in self.nodes:
                        node.signal(sig)
                deadline = time.monotonic() + wait_s
                while any(n.alive() for n in self.nodes) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except asyncio.CancelledError:  # cancelled while waiting: no more waiting
            for node in self.nodes:
                node.signal(signal.SIGKILL)
            raise
        finally:
            self._finish()

    def stop_now(self) -> None:
        """The same, synchronously (no event loop needed)."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, KILL_WAIT_S)):
            for node in self.nodes:
                node.signal(sig)
            deadline = time.monotonic() + wait_s
            while any(n.alive() for n in self.nodes) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._finish()

    def _finish(self) -> None:
        for node in self.nodes:
            node.close_log()
        with contextlib.suppress(ValueError):
            NodeSet.live.remove(self)
        with contextlib.suppress(Exception):
            self.deleted_keys = delete_prefix(self.store_url, self.prefix)

    @classmethod
    def stop_all_now(cls) -> None:
        for nodes in reversed(list(cls.live)):
            nodes.stop_now()
