"""What the bench reads from Redis itself, for bench/redis_bench.py: its command counts and
CPU time (INFO commandstats, INFO cpu) and, in a phase of its own, every command it runs
(MONITOR), to tell a node's round trips from what its Lua scripts run."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from bench.multinode import REDIS_URL, loopback_redis


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
