"""Graceful drain: SIGTERM or a first Ctrl-C stops new work, lets running turns finish
(up to `drain_timeout_s`), then runs the normal shutdown; a second signal skips the wait.

Why our own signal handlers: aiohttp's (run_app's `handle_signals`) start its shutdown at
once, and that stops the listening sockets before `on_shutdown` runs, so a wait there
would leave /ready unreachable and refuse every new connection. Here the server keeps
listening while it drains: /ready answers 503, new sessions get `server_draining`. When
the wait ends, GracefulExit is raised from a loop callback, as aiohttp's own handler does,
and aiohttp's usual shutdown follows: `on_shutdown` interrupts what still runs, ends every
session (reason "shutdown") and closes each connection with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from .keys import READY, SESSIONS, SETTINGS
from .sessions import SessionManager

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often the wait looks for running turns.
POLL_S = 0.05


def running_turns(sessions: SessionManager) -> int:
    return sum(1 for session in sessions.sessions.values() if session.busy)


def _graceful_exit() -> None:
    raise web.GracefulExit()


class Drain:
    """One app's shutdown by signal: the first drains, the second stops now, later ones
    are ignored."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None

    def on_signal(self) -> None:
        if self.task is None:
            self.app[READY].clear()
            self.app[SESSIONS].draining = True
            self.task = asyncio.get_running_loop().create_task(self._wait(), name="drain")
        else:
            self.task.cancel()
            left = running_turns(self.app[SESSIONS])
            self._exit(f"a second signal; interrupting {left} running turn(s) now")

    async def _wait(self) -> None:
        sessions, timeout_s = self.app[SESSIONS], self.app[SETTINGS].drain_timeout_s
        log.info(
            "Draining: %d turn(s) running; waiting up to %g s for them to finish, new sessions "
            "are refused (Ctrl-C again to stop now).",
            running_turns(sessions),
            timeout_s,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Polled on purpose: a drain is rare and short, and turns have no shared "all
        # ended" event to wait for.
        while running_turns(sessions) and loop.time() - started < timeout_s:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
        left = running_turns(sessions)
        took = loop.time() - started
        if left:
            self._exit(f"{left} turn(s) still running after {took:.1f} s; interrupting them")
        else:
            self._exit(f"no turn running after {took:.1f} s")

    def _exit(self, why: str) -> None:
        """Hand over to aiohttp's shutdown (on_shutdown ends sessions, closes with 1001).
        From here on SIGTERM and SIGINT are ignored until the process exits: closing the
        loop would put their default handlers back, and a late signal would then kill a
        shutdown that is already under way (it is bounded by shutdown_timeout_s)."""
        log.info("Drain over: %s; shutting down.", why)
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        loop.call_soon(_graceful_exit)


async def handle_signals(app: web.Application) -> None:
    """on_startup: SIGTERM and SIGINT drain the app. (Where the loop has no signal
    handlers, Windows, Ctrl-C stops at once as before.)"""
    drain = Drain(app)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        for sig in SIGNALS:
            loop.add_signal_handler(sig, drain.on_signal)
