"""The `myagent-ws` command: builds settings and the registry, then serves. No server logic."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .registry import AgentRegistry, StartupError
from .settings import Settings


def _fail(exc: Exception, debug: bool) -> None:
    """One clear line (a traceback only with --debug), exit status 2."""
    if debug:
        traceback.print_exception(exc)
    click.echo(f"Error: {exc}", err=True)
    sys.exit(2)


def _registry(
    files: tuple[str, ...], default: str | None, say: Callable[[str], Any]
) -> AgentRegistry:
    from .loader import agents_in_module, load_module

    registry = AgentRegistry()
    for path in files:
        say(f"🔍 Loading agent file: {path}")
        for spec in agents_in_module(load_module(path), path):
            registry.add(spec)
            say(
                f"✅ Agent loaded: {spec.name}"
                + (f" (tools: {', '.join(spec.tools)})" if spec.tools else "")
            )
    if not registry:
        raise StartupError("No agents to serve; give an agent file: myagent-ws server agent.py")
    if default:
        registry.set_default(default)
    return registry


@click.group()
@click.version_option(__version__, prog_name="myagent-ws")
def cli() -> None:
    """Serve Python LLM agents over one WebSocket endpoint."""


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--host", default="localhost", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--default", "default_agent", help="Agent used when a client names none.")
@click.option("--model", envvar="MYAGENT_MODEL", help="LLM model name [env: MYAGENT_MODEL].")
@click.option(
    "--llm-base-url",
    envvar="OPENAI_BASE_URL",
    help="OpenAI-compatible endpoint [env: OPENAI_BASE_URL].",
)
@click.option("--debug", is_flag=True, help="Log every frame in and out; tracebacks on errors.")
def server(
    files: tuple[str, ...],
    host: str,
    port: int,
    default_agent: str | None,
    model: str | None,
    llm_base_url: str | None,
    debug: bool,
) -> None:
    """Serve the agents defined in FILES (Python files) until Ctrl-C."""
    from aiohttp import web

    from .app import create_app, model_for

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = Settings(host=host, port=port, debug=debug, model=model, llm_base_url=llm_base_url)
    try:
        registry = _registry(files, default_agent, click.echo)
        llm = model_for(settings)
    except StartupError as exc:
        _fail(exc, debug)
    info = llm.describe()
    if info.get("offline"):
        click.echo(
            "🧠 LLM: built-in offline model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
        )
    else:
        click.echo(f"🧠 LLM: {info.get('model')} at {info.get('base_url') or 'api.openai.com'}")
    shown = "localhost" if host in ("0.0.0.0", "::", "localhost") else host
    click.echo(f"🚀 MyAgent WebSocket server running at ws://{shown}:{port}")
    click.echo(f"   console: http://{shown}:{port}/   health: http://{shown}:{port}/health")
    app = create_app(settings, registry, model=llm)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=settings.shutdown_timeout_s)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def agents(files: tuple[str, ...], debug: bool) -> None:
    """List the agents defined in FILES."""
    try:
        registry = _registry(files, None, lambda _line: None)
    except StartupError as exc:
        _fail(exc, debug)
    rows = [("NAME", "SOURCE", "DESCRIPTION", "TOOLS")] + [
        (s.name, s.source, s.description, ", ".join(s.tools)) for s in registry.specs.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
