"""Agent name -> how to build one. Filled at start-up; never runs an agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .protocol import ProtocolError


class StartupError(Exception):
    """A problem that stops the server from starting; the CLI prints it as one line."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One servable agent: each session calls `factory` for an agent instance of its own."""

    name: str
    factory: Callable[[], Any]
    description: str = ""
    tools: tuple[str, ...] = ()
    source: str = ""
    default: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tools": list(self.tools)}


@dataclass
class AgentRegistry:
    """The agents this server offers, by name, in registration order."""

    specs: dict[str, AgentSpec] = field(default_factory=dict)
    default_name: str | None = None

    def add(self, spec: AgentSpec) -> None:
        existing = self.specs.get(spec.name)
        if existing is not None:
            raise StartupError(
                f"Two agents are named {spec.name!r}: one from {existing.source or 'unknown'}, "
                f"one from {spec.source or 'unknown'}. Rename one of them."
            )
        self.specs[spec.name] = spec
        if spec.default:
            self.set_default(spec.name)

    def set_default(self, name: str) -> None:
        if name not in self.specs:
            raise StartupError(
                f"The default agent {name!r} is not served; the agents are: {self._listing()}."
            )
        self.default_name = name

    def replace(self, other: AgentRegistry) -> None:
        """Serve `other`'s agents from now on (--reload), in one synchronous step: every
        lookup sees the old set or the new one, never a mix."""
        self.specs, self.default_name = dict(other.specs), other.default_name

    def names(self) -> list[str]:
        return list(self.specs)

    def describe(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self.specs.values()]

    def default(self) -> AgentSpec | None:
        """The agent a client that names none gets: the marked default, else the only one."""
        if self.default_name is not None:
            return self.specs[self.default_name]
        return next(iter(self.specs.values())) if len(self.specs) == 1 else None

    def resolve(self, name: str | None) -> AgentSpec:
        """The agent a client asked for; with no name, the default agent."""
        if name is None:
            if (spec := self.default()) is not None:
                return spec
            raise ProtocolError(
                "agent_required",
                f"This server has several agents; name one in content.agent: {self._listing()}.",
            )
        spec = self.specs.get(name)
        if spec is None:
            raise ProtocolError(
                "agent_not_found",
                f"No agent is named {name!r}; the agents are: {self._listing()}.",
            )
        return spec

    def _listing(self) -> str:
        return ", ".join(self.specs) or "(none)"

    def __len__(self) -> int:
        return len(self.specs)
