"""The `myagent-ws` command: builds settings and the registry, then serves. No server logic."""

from __future__ import annotations

import json
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


def _load(
    files: tuple[str, ...],
    plugins: tuple[str, ...],
    all_plugins: bool,
    default: str | None,
    say: Callable[[str], Any],
) -> tuple[AgentRegistry, Any]:
    from .plugins import AgentSources, build_registry, make_plugin_manager

    pm = make_plugin_manager()
    sources = AgentSources.with_env(files, plugins, all_plugins, default)
    return build_registry(pm, sources, say), pm


def agent_sources(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say which agents to serve, shared by `server` and `agents`."""
    for option in reversed(
        [
            click.argument("files", nargs=-1),
            click.option(
                "--plugin",
                "plugins",
                multiple=True,
                metavar="NAME",
                help="Serve an installed plugin's agents (entry-point name or module).",
            ),
            click.option(
                "--all-plugins", is_flag=True, help="Serve every installed plugin's agents."
            ),
            click.option("--debug", is_flag=True, help="Tracebacks on errors; log every frame."),
        ]
    ):
        command = option(command)
    return command


@click.group()
@click.version_option(__version__, prog_name="myagent-ws")
def cli() -> None:
    """Serve Python LLM agents over one WebSocket endpoint."""


@cli.command()
@agent_sources
@click.option("--host", default="localhost", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--health-port", type=int, help="Also serve /health, /ready, /metrics on this port.")
@click.option("--default", "default_agent", help="Agent used when a client names none.")
@click.option("--model", envvar="MYAGENT_MODEL", help="LLM model name [env: MYAGENT_MODEL].")
@click.option(
    "--llm-base-url",
    envvar="OPENAI_BASE_URL",
    help="OpenAI-compatible endpoint [env: OPENAI_BASE_URL].",
)
def server(
    files: tuple[str, ...],
    plugins: tuple[str, ...],
    all_plugins: bool,
    debug: bool,
    host: str,
    port: int,
    health_port: int | None,
    default_agent: str | None,
    model: str | None,
    llm_base_url: str | None,
) -> None:
    """Serve the agents of FILES (Python files) and plugins until Ctrl-C."""
    from aiohttp import web

    from .app import create_app, model_for

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = Settings(
        host=host,
        port=port,
        health_port=health_port,
        debug=debug,
        model=model,
        llm_base_url=llm_base_url,
    )
    try:
        registry, pm = _load(files, plugins, all_plugins, default_agent, click.echo)
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
    operator = f"http://{shown}:{health_port or port}"
    click.echo(f"   console: http://{shown}:{port}/   health: {operator}/health")
    app = create_app(settings, registry, pm=pm, model=llm)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=settings.shutdown_timeout_s)


@cli.command()
@agent_sources
def agents(
    files: tuple[str, ...], plugins: tuple[str, ...], all_plugins: bool, debug: bool
) -> None:
    """List the agents of FILES and plugins: name, source, description, tools."""
    try:
        registry, _ = _load(files, plugins, all_plugins, None, lambda _line: None)
    except StartupError as exc:
        _fail(exc, debug)
    rows = [("NAME", "SOURCE", "DESCRIPTION", "TOOLS")] + [
        (s.name, s.source, s.description, ", ".join(s.tools)) for s in registry.specs.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        click.echo("  ".join([*cells, row[3]]))


@cli.command()
@click.option("--debug", is_flag=True, help="Tracebacks on errors.")
def plugins(debug: bool) -> None:
    """Print the installed plugins as JSON: name, entry-point group, distribution, hooks."""
    from .plugins import installed_plugins, load_plugin, make_plugin_manager, plugin_report

    pm = make_plugin_manager()
    try:
        for plugin in installed_plugins():
            load_plugin(pm, plugin.name)
    except StartupError as exc:
        _fail(exc, debug)
    click.echo(json.dumps(plugin_report(pm), indent=2))
