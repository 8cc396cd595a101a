"""The PluginManager and where agents come from: files, pluggy plugins, entry points.

Installing a package never exposes an agent by itself: a plugin is loaded only when it
is named (``--plugin NAME``, ``MYAGENT_WS_LOAD_PLUGINS``) or when ``--all-plugins`` asks
for every installed one. Nothing here runs at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .loader import agents_in_module, load_module, spec_for
from .registry import AgentRegistry, StartupError

PLUGIN_GROUP = "myagent_ws"
AGENTS_GROUP = "myagent_ws.agents"


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("myagent_ws")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("MYAGENT_WS_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda text: print(text, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """An entry point in one of our groups, as packaging metadata describes it."""

    entry_point: EntryPoint

    @property
    def name(self) -> str:
        return self.entry_point.name

    @property
    def group(self) -> str:
        return self.entry_point.group

    @property
    def value(self) -> str:
        return self.entry_point.value

    @property
    def distribution(self) -> str:
        return self.entry_point.dist.name if self.entry_point.dist else ""

    @property
    def version(self) -> str:
        return self.entry_point.dist.version if self.entry_point.dist else ""

    @property
    def label(self) -> str:
        return f"entry point {self.name} ({self.distribution} {self.version})".rstrip()


def installed_plugins() -> list[InstalledPlugin]:
    """Every installed plugin of both groups, hook plugins first, sorted by name."""
    found = {
        (ep.group, ep.name): InstalledPlugin(ep)
        for group in (PLUGIN_GROUP, AGENTS_GROUP)
        for ep in entry_points(group=group)
    }
    return sorted(found.values(), key=lambda p: (p.group != PLUGIN_GROUP, p.name))


@dataclass
class AgentSources:
    """What the server is asked to serve."""

    files: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    all_plugins: bool = False
    default: str | None = None

    @classmethod
    def with_env(
        cls, files: Iterable[str], plugins: Iterable[str], all_plugins: bool, default: str | None
    ) -> AgentSources:
        """The command line's plugins plus the comma list in MYAGENT_WS_LOAD_PLUGINS."""
        from_env = [n.strip() for n in os.environ.get("MYAGENT_WS_LOAD_PLUGINS", "").split(",")]
        named = tuple(dict.fromkeys([*plugins, *(n for n in from_env if n)]))
        return cls(tuple(files), named, all_plugins, default)


def build_registry(
    pm: pluggy.PluginManager,
    sources: AgentSources,
    say: Callable[[str], Any] = lambda _line: None,
) -> AgentRegistry:
    """Load files and plugins into `pm` and collect their agents into one registry, in the
    order they were given; plugins registered on `pm` beforehand (tests, embedders) last."""
    registry = AgentRegistry()
    earlier = set(pm.get_plugins())
    handled = set(earlier)

    def add_hook_agents() -> None:
        new = set(pm.get_plugins()) - handled
        handled.update(new)
        _add_all(registry, hook_agents(pm, new), say)

    for path in sources.files:
        say(f"🔍 Loading agent file: {path}")
        module = load_module(path)
        if _register_hooks(pm, module, f"file:{path}"):
            _add_all(registry, agents_in_module(module, path), say)
        add_hook_agents()
    names = [p.name for p in installed_plugins()] if sources.all_plugins else []
    for name in dict.fromkeys([*names, *sources.plugins]):
        say(f"🔌 Loading plugin: {name}")
        _add_all(registry, load_plugin(pm, name), say)
        add_hook_agents()
    _add_all(registry, hook_agents(pm, earlier), say)
    if not registry:
        raise StartupError(
            "No agents to serve: give an agent file (myagent-ws server agent.py) or a plugin "
            "(--plugin NAME); `myagent-ws plugins` lists the installed ones."
        )
    if sources.default:
        registry.set_default(sources.default)
    return registry


def load_plugin(pm: pluggy.PluginManager, name: str) -> list[Any]:
    """Load one plugin by entry-point name or module path. Hook plugins are registered on
    `pm` (their agents come from register_agents); agent entry points return their specs."""
    if pm.has_plugin(name):
        return []
    installed = {(p.group, p.name): p for p in installed_plugins()}
    plugin = installed.get((PLUGIN_GROUP, name))
    if plugin is not None:
        pm.register(_load(name, plugin.entry_point.load), name=name)
        return []
    plugin = installed.get((AGENTS_GROUP, name))
    if plugin is not None:
        target = _load(name, plugin.entry_point.load)
        factory = target.clone if callable(getattr(target, "clone", None)) else target
        if not callable(factory):
            raise StartupError(
                f"Plugin {name!r}: {plugin.value} is neither an agent nor a factory."
            )
        pm.register(ModuleType(f"myagent_ws.agents:{name}"), name=name)  # marks it loaded
        return [spec_for(factory, plugin.label)]
    if _importable(name):
        module = _load(name, lambda: importlib.import_module(name))
        if _register_hooks(pm, module, name):
            return agents_in_module(module, f"module {name}")
        return []
    known = ", ".join(p.name for p in installed.values()) or "none installed"
    raise StartupError(f"No plugin named {name!r}. Installed plugins: {known}.")


def hook_agents(pm: pluggy.PluginManager, plugins: set[Any]) -> list[Any]:
    """Agents that these plugins contribute through register_agents, in registration order,
    each labelled with its plugin."""
    specs: list[Any] = []
    for impl in pm.hook.register_agents.get_hookimpls():
        if impl.plugin not in plugins:
            continue
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
        source = f"plugin {plugin}"

        def register(
            name: str,
            factory: Callable[[], Any],
            description: str = "",
            default: bool = False,
            *,
            _source: str = source,
        ) -> None:
            specs.append(
                spec_for(factory, _source, name=name, description=description, default=default)
            )

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(
                f"Plugin {plugin!r} failed in register_agents: {type(exc).__name__}: {exc}"
            ) from exc
    return specs


def _add_all(registry: AgentRegistry, specs: list[Any], say: Callable[[str], Any]) -> None:
    for spec in specs:
        registry.add(spec)
        tools = f" (tools: {', '.join(spec.tools)})" if spec.tools else ""
        say(f"✅ Agent loaded: {spec.name}{tools}")


def _load(name: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except Exception as exc:
        raise StartupError(f"Plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from exc


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _hookimpl_names(module: Any) -> set[str]:
    return {attr for attr in dir(module) if hasattr(getattr(module, attr, None), "myagent_ws_impl")}


def _register_hooks(pm: pluggy.PluginManager, module: Any, name: str) -> bool:
    """Register the module on `pm`; True if its module-level agents are to be served too
    (it has no register_agents hook and defines `agent`, `create_agent` or `agents`, or it
    has no hooks at all, as a plain agent file)."""
    hooks = _hookimpl_names(module)
    if not hooks:
        return True
    if not pm.is_registered(module):
        pm.register(module, name=name)
    defines = any(getattr(module, a, None) is not None for a in ("agent", "create_agent", "agents"))
    return "register_agents" not in hooks and defines


def plugin_report(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Every installed plugin (loaded into `pm`) with its hooks, for `myagent-ws plugins`."""
    report = []
    for plugin in installed_plugins():
        loaded = pm.get_plugin(plugin.name)
        hooks = sorted(c.name for c in pm.get_hookcallers(loaded) or ()) if loaded else []
        report.append(
            {
                "name": plugin.name,
                "group": plugin.group,
                "value": plugin.value,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "hooks": hooks,
            }
        )
    return report
