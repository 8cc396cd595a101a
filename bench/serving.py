"""What the bench's programs share: enough file descriptors, a listener that says READY
and stops on a signal, and the event loop they run on (the same for all of them)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web


def raise_open_files() -> None:
    """10,000 sockets need more descriptors than the usual soft limit of 1,024: raise it
    to the hard limit (2**20 when that is unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve_until_signal(
    app: web.Application, host: str, port: int, shutdown_timeout: float
) -> None:
    """Listen (port 0 picks one), print `READY <port>`, and serve until SIGTERM/SIGINT."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"READY {runner.addresses[0][1]}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(main: Coroutine[Any, Any, None], uvloop: bool) -> None:
    """Run `main` on asyncio's loop, or on uvloop (bench/run.py --uvloop runs every
    program on the same one)."""
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop:
            import uvloop as fast

            fast.run(main)
        else:
            asyncio.run(main)
