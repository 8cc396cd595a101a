"""Agent files -> AgentSpecs. An agent file is a Python module that defines a module-level
`agent`, a `create_agent()` factory, or a list `agents`; each session gets its own instance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .registry import AgentSpec, StartupError


def load_module(path: str | Path) -> Any:
    """Import a Python file as a module with a unique name; errors become StartupError."""
    file = Path(path)
    if not file.exists():
        raise StartupError(f"{path}: no such file.")
    if file.is_dir() or file.suffix != ".py":
        raise StartupError(f"{path}: an agent file must be a Python file ending in .py.")
    resolved = file.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    name = f"myagent_ws_agents.{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise StartupError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The file's own folder is importable, as when running `python agent.py`.
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        # The error may be in a module the file imports: name that one, not the file.
        if exc.filename and Path(exc.filename).resolve() != resolved:
            raise StartupError(
                f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg} (imported by {path})."
            ) from exc
        raise StartupError(f"{path}:{exc.lineno}: syntax error: {exc.msg}.") from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        raise StartupError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    return module


def agents_in_module(module: Any, source: str) -> list[AgentSpec]:
    """The agents a module defines: `create_agent()`, `agent`, or `agents = [...]`."""
    factories: list[Callable[[], Any]] = []
    if callable(getattr(module, "create_agent", None)):
        factories.append(module.create_agent)
    elif getattr(module, "agent", None) is not None:
        factories.append(_cloner(module.agent, source))
    for item in getattr(module, "agents", None) or ():
        factories.append(_cloner(item, source))
    if not factories:
        raise StartupError(
            f"{source}: defines no agent. Add `agent = create_react_agent(...)`, "
            "a `create_agent()` function, or `agents = [...]`."
        )
    return [spec_for(factory, source) for factory in factories]


def spec_for(
    factory: Callable[[], Any],
    source: str,
    *,
    name: str | None = None,
    description: str | None = None,
    default: bool = False,
) -> AgentSpec:
    """Build one agent to learn its name, description and tools, and check it works."""
    try:
        sample = factory()
    except Exception as exc:
        raise StartupError(
            f"{source}: creating the agent failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(getattr(sample, "name", None), str) or not callable(
        getattr(sample, "run", None)
    ):
        raise StartupError(
            f"{source}: {sample!r} is not an agent; build one with myagent.create_react_agent()."
        )
    return AgentSpec(
        name=name or sample.name,
        factory=factory,
        description=description or getattr(sample, "description", "") or "",
        tools=tuple(tool.name for tool in getattr(sample, "tools", ())),
        source=source,
        default=default,
    )


def _cloner(agent: Any, source: str) -> Callable[[], Any]:
    if not callable(getattr(agent, "clone", None)):
        raise StartupError(
            f"{source}: {agent!r} is not an agent; build one with myagent.create_react_agent()."
        )
    return agent.clone


def load_agent_files(paths: list[str]) -> list[AgentSpec]:
    specs: list[AgentSpec] = []
    for path in paths:
        specs.extend(agents_in_module(load_module(path), str(path)))
    return specs
