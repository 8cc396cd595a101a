"""`myagent-ws server --reload`: serve an edited agent without a restart.

A background task watches the agent files and the local modules they import (found from
their `import` statements, among the modules loaded; the framework, the standard library
and installed packages are never reloaded, so the classes the server checks against stay
the same). After an edit, the agent files that depend on what changed are imported afresh,
together with every changed module and every module that imports one; their agents
replace the old ones in the running registry in one step (plugin agents stay as they
are); then the sessions of those agents end with `agent.session_end` reason "reloaded".
Connections stay open and new sessions get the new agents at once. A reload that fails
(a syntax error, an import error, no agent) changes nothing: the old agents keep serving,
the error is printed in one line, and the next edit tries again.

Each process watches on its own: with several processes on one Redis store, each reloads
its registry and ends the sessions it serves; a session no process holds keeps its memory
and gets the new agent when it is next used.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import sysconfig
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import click
import pluggy
from aiohttp import web

from .keys import CONNECTIONS, REGISTRY, SESSIONS
from .loader import agents_in_module, load_module
from .outbound import broadcast
from .plugins import _register_hooks, hook_agents
from .protocol import make_event
from .registry import AgentRegistry, AgentSpec, StartupError
from .sessions import SessionManager

log = logging.getLogger(__name__)

# Milliseconds without a new change before a reload starts (a save is several writes),
# and the longest a stream of changes is grouped: both well inside the 2 s promise.
QUIET_MS = 50
GROUP_MS = 400
# Reloading the framework would leave two copies of its classes; it is never watched.
FRAMEWORK = ("myagent", "myagent_ws")
# What a reloaded agent's sessions are told (agent.session_end content: "Session ended (…).").
ENDED = "its agent's code changed and was reloaded; create a new session"

Say = Callable[[str], Any]


def _installed_roots() -> tuple[str, ...]:
    """Folders whose modules are not the user's own: the standard library, installed
    packages and the framework's packages. (Not the interpreter's prefix: with a system
    Python that is /usr, and a project may well live in /usr/src.)"""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    for name in FRAMEWORK:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            roots.add(str(Path(file).parent))
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _prefixes(name: str) -> list[str]:
    """`import a.b.c` loads a, a.b and a.b.c."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_names(path: Path, package: str | None) -> set[str]:
    """Every module name the file's import statements may load (a file that cannot be
    read or parsed imports nothing we can know of)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.update(_prefixes(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package or "")
                except (ImportError, ValueError):
                    continue
            names.update(_prefixes(base))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


class Reloader:
    """Watches the agent files of one server and reloads their agents after an edit."""

    def __init__(
        self,
        registry: AgentRegistry,
        files: Iterable[str],
        pm: pluggy.PluginManager,
        default: str | None = None,
        *,
        debug: bool = False,
        say: Say = click.echo,
        warn: Say = lambda line: click.echo(line, err=True),
    ) -> None:
        self.registry = registry
        self.files = tuple(files)
        self.paths = {file: Path(file).resolve() for file in self.files}
        self.pm = pm
        self.default = default
        self.debug = debug
        self.say, self.warn = say, warn
        # Each file's agents as served now (its module-level agents and its hook's), and
        # the agents that come from elsewhere (plugins), which a reload keeps as they are.
        self.by_file: dict[str, list[AgentSpec]] = {file: [] for file in self.files}
        self.others: list[AgentSpec] = []
        for spec in registry.specs.values():
            owner = next((f for f in self.files if spec.source in (f, f"plugin file:{f}")), None)
            (self.by_file[owner] if owner is not None else self.others).append(spec)
        # Changes not yet served: a failed reload keeps them for the next attempt.
        self.pending: set[Path] = set()
        self._roots = _installed_roots()
        self._stop = asyncio.Event()
        self._stopping = False
        self.scan()

    # -- what is watched -----------------------------------------------------------------

    def scan(self) -> None:
        """Find the local modules each watched file imports, from the agent files down.
        `imports` maps every watched file to the watched files it imports, `names` each
        one to its names in sys.modules."""
        agents = set(self.paths.values())
        self.names: dict[Path, set[str]] = {path: set() for path in agents}
        packages: dict[Path, str | None] = {path: None for path in agents}
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and Path(file) in agents:  # the loader's module names
                self.names[Path(file)].add(name)
        self.imports: dict[Path, set[Path]] = {}
        queue = list(agents)
        while queue:
            path = queue.pop()
            if path in self.imports:
                continue
            self.imports[path] = set()
            for name in imported_names(path, packages.get(path)):
                module = sys.modules.get(name)
                file = getattr(module, "__file__", None)
                if not isinstance(file, str) or not file.endswith(".py"):
                    continue
                found = Path(os.path.realpath(file))
                if found not in agents and not self._local(found):
                    continue
                self.names.setdefault(found, set()).add(name)
                packages.setdefault(found, getattr(module, "__package__", None))
                self.imports[path].add(found)
                queue.append(found)
        self._watched = {str(path) for path in self.imports}

    def _local(self, path: Path) -> bool:
        """The user's own module: not the framework's, nor installed, nor the stdlib."""
        installed = "site-packages" in path.parts or "dist-packages" in path.parts
        return not installed and not str(path).startswith(self._roots)

    @property
    def watched(self) -> set[Path]:
        return set(self.imports)

    def reaches(self, path: Path) -> set[Path]:
        """The file and every watched file it imports, directly or not."""
        seen, queue = set(), [path]
        while queue:
            current = queue.pop()
            if current not in seen:
                seen.add(current)
                queue.extend(self.imports.get(current, ()))
        return seen

    def describe(self) -> str:
        """The banner line: what is watched."""
        if not self.files:
            return "♻️  reload: on, but no agent file to watch (plugin agents are not reloaded)"
        modules = sorted(self.watched - set(self.paths.values()))
        shown = ", ".join(path.name for path in modules[:5]) + (", …" if len(modules) > 5 else "")
        files = ", ".join(self.files)
        if not modules:
            return f"♻️  reload: on, watching {files}"
        count = f"{len(modules)} local module{'s' if len(modules) != 1 else ''}"
        return f"♻️  reload: on, watching {files} and {count} imported ({shown})"

    def _wanted(self, _change: Any, path: str) -> bool:
        return path in self._watched

    # -- one reload ----------------------------------------------------------------------

    async def reload(
        self, changed: Iterable[Path], sessions: SessionManager, connections: Iterable[Any] = ()
    ) -> bool:
        """Serve the new code of what changed (and of what depends on it). True if the
        agents were replaced; False if nothing needed it or it failed (the old stay)."""
        started = time.perf_counter()
        self.pending |= set(changed) & self.watched
        if not self.pending or sessions.draining:
            return False
        stale = {path for path in self.imports if self.reaches(path) & self.pending}
        files = [file for file in self.files if self.paths[file] in stale]
        # Import afresh: drop the stale modules (kept, to put back if this fails), their
        # bytecode (a same-size edit within a second looks unchanged to it) and the
        # finders' directory listings (a new module must be found).
        dropped = {
            name: sys.modules.pop(name)
            for path in stale
            for name in self.names.get(path, ())
            if name in sys.modules
        }
        for path in self.pending:
            with contextlib.suppress(OSError, ValueError):
                os.remove(importlib.util.cache_from_source(str(path)))
        importlib.invalidate_caches()
        undo: list[Callable[[], Any]] = []
        try:
            fresh = {file: self._load_file(file, undo) for file in files}
            registry = self._registry(fresh)
        except Exception as exc:
            sys.modules.update(dropped)
            for step in reversed(undo):
                step()
            self._failed(exc)
            return False
        names = {spec.name for file in files for spec in [*self.by_file[file], *fresh[file]]}
        ending = [s for s in list(sessions.sessions.values()) if s.agent_name in names]
        self.registry.replace(registry)  # new sessions get the new agents from here on
        self.by_file.update(fresh)
        changed_names = sorted(path.name for path in self.pending)
        self.pending.clear()
        self.scan()
        for session in ending:
            try:
                await sessions.end(session, "reloaded", ENDED)
            except Exception:
                log.exception("reload: ending session %s failed", session.id)
        self._announce(fresh, changed_names, len(ending), started, connections)
        return True

    def _load_file(self, file: str, undo: list[Callable[[], Any]]) -> list[AgentSpec]:
        """One agent file's agents from a fresh import, as build_registry collects them
        (its hooks registered on the plugin manager anew); `undo` learns how to take the
        registration back."""
        module = load_module(file)
        name = f"file:{file}"
        old = self.pm.get_plugin(name)
        if old is not None:
            self.pm.unregister(name=name)
            undo.append(lambda: self.pm.register(old, name=name))
        serve_module = _register_hooks(self.pm, module, name)
        registered = self.pm.is_registered(module)
        if registered:
            undo.append(lambda: self.pm.unregister(module))
        specs = agents_in_module(module, file) if serve_module else []
        if registered:
            specs += hook_agents(self.pm, {module})
        return specs

    def _registry(self, fresh: dict[str, list[AgentSpec]]) -> AgentRegistry:
        """The whole new registry, in the order of start-up: files, then plugins."""
        registry = AgentRegistry()
        for file in self.files:
            for spec in fresh.get(file, self.by_file[file]):
                registry.add(spec)
        for spec in self.others:
            registry.add(spec)
        if not registry:
            raise StartupError("No agents to serve: the agent files define none now.")
        if self.default:
            registry.set_default(self.default)
        return registry

    def _failed(self, exc: Exception) -> None:
        """One line on stderr (a traceback before it only with --debug)."""
        if self.debug:
            traceback.print_exception(exc)
        text = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
        self.warn(
            f"Error: reload failed, still serving the previous agents: {' '.join(text.split())}"
        )

    def _announce(
        self,
        fresh: dict[str, list[AgentSpec]],
        changed: list[str],
        ended: int,
        started: float,
        connections: Iterable[Any],
    ) -> None:
        """A line for the operator, and a system.notice for every connection (its
        system.connected list of agents may be out of date now)."""
        agents = [spec.name for specs in fresh.values() for spec in specs]
        took = (time.perf_counter() - started) * 1000
        self.say(
            f"♻️  reloaded {', '.join(agents)} after a change to {', '.join(changed)} "
            f"({took:.0f} ms; {ended} session{'s' if ended != 1 else ''} ended)"
        )
        notice = (
            f"The server reloaded {', '.join(agents)}: their sessions ended; "
            f"the agents now are {', '.join(self.registry.names())}."
        )
        broadcast(connections, make_event("system.notice", content=notice))

    # -- watching ------------------------------------------------------------------------

    async def watch(self, sessions: SessionManager, connections: Iterable[Any] = ()) -> None:
        """Reload after every batch of edits until stopped. Watches the files' folders
        (an editor may save by replacing the file), not their subfolders, and starts over
        when a reload brings modules in other folders."""
        from watchfiles import awatch

        if not self.debug:  # it logs every change at INFO
            logging.getLogger("watchfiles").setLevel(logging.WARNING)
        while not self._stopping:
            folders = {str(path.parent) for path in self.watched}
            if not folders:
                return
            self._stop.clear()
            async for changes in awatch(
                *sorted(folders),
                watch_filter=self._wanted,
                debounce=GROUP_MS,
                step=QUIET_MS,
                recursive=False,
                stop_event=self._stop,
            ):
                await self.reload({Path(path) for _, path in changes}, sessions, connections)
                if {str(path.parent) for path in self.watched} != folders:
                    self._stop.set()  # watch the new folders too

    async def serve_app(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: watch from start-up to shutdown."""
        task = asyncio.create_task(self._watch_logged(app[SESSIONS], app[CONNECTIONS]))
        await asyncio.sleep(0)  # its first step sets the watch up, before clients come
        yield
        self._stopping = True
        self._stop.set()  # the watch thread notices within QUIET_MS
        try:
            await asyncio.wait_for(task, 2)
        except (TimeoutError, asyncio.CancelledError):
            pass

    async def _watch_logged(self, sessions: SessionManager, connections: Iterable[Any]) -> None:
        try:
            await self.watch(sessions, connections)
        except Exception as exc:  # e.g. the system's limit of watched folders
            if self.debug:
                traceback.print_exception(exc)
            self.warn(f"Error: --reload stopped watching: {type(exc).__name__}: {exc}")


def install(
    app: web.Application,
    files: Iterable[str],
    pm: pluggy.PluginManager,
    default: str | None = None,
    *,
    debug: bool = False,
) -> str:
    """Watch `files` for as long as `app` runs; returns the banner line."""
    reloader = Reloader(app[REGISTRY], files, pm, default, debug=debug)
    app.cleanup_ctx.append(reloader.serve_app)
    return reloader.describe()
