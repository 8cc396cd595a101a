"""Agents from files, hook plugins and installed entry points on one endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from importlib.metadata import entry_points

import aiohttp
import pytest

from myagent_ws import hookimpl
from myagent_ws.plugins import (
    AGENTS_GROUP,
    PLUGIN_GROUP,
    AgentSources,
    build_registry,
    make_plugin_manager,
)
from myagent_ws.registry import StartupError
from tests.client import names, ticket, upgrade
from tests.conftest import GREETER, ROOT, WEATHER
from tests.plugin_modules import echo_plugin
from tests.test_cli import run_cli

ENV = {"PYTHONPATH": str(ROOT)}  # makes tests.plugin_modules importable by the CLI


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **ENV, **(env or {})})


@pytest.fixture
async def mixed_server(aiohttp_server):
    """One endpoint: a file agent, a hook plugin agent and an entry-point agent."""
    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings

    pm = make_plugin_manager()
    sources = AgentSources(files=(GREETER,), plugins=("weather", "calculator"))
    registry = build_registry(pm, sources)
    return await aiohttp_server(create_app(Settings(host="127.0.0.1", port=0), registry, pm=pm))


def test_plugin_packages_are_really_installed():
    (weather,) = entry_points(group=PLUGIN_GROUP, name="weather")
    (calculator,) = entry_points(group=AGENTS_GROUP, name="calculator")
    assert weather.dist.name == "myagent-ws-weather"
    assert calculator.dist.name == "myagent-ws-calculator"


async def test_file_and_two_plugin_agents_share_one_endpoint(mixed_server, connect):
    client = await connect(mixed_server)
    assert client.received[0]["metadata"]["agents"] == [
        "greeter",
        "weather-assistant",
        "calculator",
    ]
    await client.send({"event": "user.list_agents"})
    listed = (await client.expect("system.agents"))["content"]
    assert [a["name"] for a in listed] == ["greeter", "weather-assistant", "calculator"]
    async with aiohttp.ClientSession() as http:
        async with http.get(mixed_server.make_url("/agents")) as response:
            served = (await response.json())["agents"]
    assert [a["name"] for a in served] == ["greeter", "weather-assistant", "calculator"]


async def test_three_sessions_on_one_connection_pick_agents_by_name_concurrently(
    mixed_server, connect
):
    client = await connect(mixed_server)
    asks = {
        "greeter": "你好，我是 Ada",
        "weather-assistant": "北京今天天气怎么样？",
        "calculator": "What is 12 * (3 + 4)?",
    }
    sessions = {agent: await client.create_session(agent) for agent in asks}
    for agent, text in asks.items():
        await client.send({"event": "user.message", "session_id": sessions[agent], "content": text})
    # Read everything once, then split by session: the three turns interleave on one socket.
    finals: dict[str, list[dict]] = {sid: [] for sid in sessions.values()}
    async with asyncio.timeout(10):
        while sum(1 for events in finals.values() if events and _ended(events)) < 3:
            event = await client.recv()
            if event.get("session_id") in finals:
                finals[event["session_id"]].append(event)
    tools = {agent: _tools(finals[sid]) for agent, sid in sessions.items()}
    assert tools == {
        "greeter": ["greet"],
        "weather-assistant": ["get_weather"],
        "calculator": ["calculate"],
    }
    assert "84" in finals[sessions["calculator"]][-1]["content"]
    assert all(events[-1]["event"] == "agent.final_answer" for events in finals.values())


def _ended(events: list[dict]) -> bool:
    return events[-1]["event"] in ("agent.final_answer", "agent.error")


def _tools(events: list[dict]) -> list[str]:
    return [e["metadata"]["tool"] for e in events if e["event"] == "agent.tool_call"]


def test_installed_plugins_serve_nothing_unless_named():
    only_file = cli("agents", GREETER)
    assert only_file.returncode == 0, only_file.stderr
    assert "weather-assistant" not in only_file.stdout and "calculator" not in only_file.stdout
    everything = cli("agents", GREETER, "--all-plugins")
    assert "weather-assistant" in everything.stdout and "calculator" in everything.stdout


def test_agents_table_names_each_source():
    result = cli("agents", GREETER, "--plugin", "weather", "--plugin", "calculator")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert GREETER in rows["greeter"]
    assert "plugin weather" in rows["weather-assistant"]
    assert "get_weather, get_city_info" in rows["weather-assistant"]
    assert "entry point calculator (myagent-ws-calculator" in rows["calculator"]


def test_load_plugins_env_names_plugins_and_empty_loads_none():
    named = cli("agents", "--all-plugins", env={"MYAGENT_WS_LOAD_PLUGINS": ""})
    assert "weather-assistant" in named.stdout  # --all-plugins still asks for all
    via_env = cli("agents", GREETER, env={"MYAGENT_WS_LOAD_PLUGINS": "calculator"})
    assert "calculator" in via_env.stdout and "weather-assistant" not in via_env.stdout
    none = cli("agents", GREETER, env={"MYAGENT_WS_LOAD_PLUGINS": ""})
    assert none.stdout.count("\n") == 2  # header + greeter


def test_same_agent_name_from_file_and_plugin_fails_naming_both():
    result = cli("server", WEATHER, "--plugin", "weather")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "Two agents are named 'weather-assistant'" in line
    assert WEATHER in line and "plugin weather" in line


def test_unknown_plugin_lists_installed_ones():
    result = cli("server", "--plugin", "nosuch")
    assert result.returncode == 2
    assert "No plugin named 'nosuch'" in result.stderr
    assert "weather" in result.stderr and "calculator" in result.stderr


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("tests.plugin_modules.broken_on_import", "ImportError: the plugin needs a package"),
        ("tests.plugin_modules.broken_hook", "RuntimeError: cannot reach the agent catalogue"),
    ],
)
def test_plugin_that_raises_gives_one_line_and_debug_shows_traceback(module, expected):
    result = cli("server", GREETER, "--plugin", module)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and expected in errors[0] and module.rsplit(".", 1)[-1] in errors[0]
    debug = cli("server", GREETER, "--plugin", module, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_no_agents_at_all_is_a_clear_error():
    result = cli("server", env={"MYAGENT_WS_LOAD_PLUGINS": ""})
    assert result.returncode == 2
    assert "No agents to serve" in result.stderr


def test_plugins_command_prints_installed_plugins_as_json():
    result = cli("plugins")
    assert result.returncode == 0, result.stderr
    report = {p["name"]: p for p in json.loads(result.stdout)}
    assert report["weather"]["group"] == "myagent_ws"
    assert report["weather"]["hooks"] == ["register_agents"]
    assert report["weather"]["distribution"] == "myagent-ws-weather"
    assert report["calculator"]["group"] == "myagent_ws.agents"
    assert report["calculator"]["value"] == "myagent_ws_calculator:create_agent"


def test_cli_serves_plugin_agents_over_websocket(cli_server):
    server = cli_server("--plugin", "calculator", "--plugin", "weather", "--default", "calculator")
    output = server.stop()
    assert "Loading plugin: calculator" in output and "Agent loaded: calculator" in output
    assert "Agent loaded: weather-assistant" in output


# -- hooks ------------------------------------------------------------------------------


def test_hook_register_agents_from_a_plugin_object():
    class Plugin:
        @hookimpl
        def register_agents(self, register):
            register("echo", echo_plugin.create_echo, description="from a test", default=True)

    pm = make_plugin_manager()
    pm.register(Plugin(), name="test-plugin")
    registry = build_registry(pm, AgentSources(files=(GREETER,)))
    spec = registry.resolve(None)
    assert (spec.name, spec.source, spec.description) == (
        "echo",
        "plugin test-plugin",
        "from a test",
    )
    assert registry.names() == ["greeter", "echo"]


def test_hook_register_agents_duplicate_between_plugins_fails():
    pm = make_plugin_manager()
    pm.register(echo_plugin, name="first")

    class Second:
        @hookimpl
        def register_agents(self, register):
            register("echo", echo_plugin.create_echo)

    pm.register(Second(), name="second")
    with pytest.raises(StartupError, match=r"plugin first.*plugin second"):
        build_registry(pm, AgentSources())


async def test_hook_prepare_app_adds_routes(aiohttp_server):
    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings

    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("tests.plugin_modules.echo_plugin",)))
    server = await aiohttp_server(create_app(Settings(), registry, pm=pm))
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/-/echo/hello")) as response:
            assert await response.json() == {"hello": "from echo_plugin"}


async def test_hook_observe_event_sees_every_event_of_a_turn(aiohttp_server, connect):
    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings

    echo_plugin.OBSERVED.clear()
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(plugins=("tests.plugin_modules.echo_plugin",)))
    server = await aiohttp_server(create_app(Settings(), registry, pm=pm))
    client = await connect(server)
    sid = await client.create_session()
    events = await client.turn(sid, "ping")
    assert events[-1]["content"] == "echo: ping"
    received = [e for e in client.received if e.get("session_id") == sid]
    observed = [event for session_id, event in echo_plugin.OBSERVED if session_id == sid]
    assert [e["seq"] for e in observed] == [e["seq"] for e in received]
    assert names(observed) == names(received)
    assert observed[-1]["content"] == "echo: ping"


def test_every_hook_has_a_test():
    pm = make_plugin_manager()
    hooks = [name for name in dir(pm.hook) if not name.startswith("_")]
    tested = {name for name in globals() if name.startswith("test_hook_")}
    for hook in hooks:
        assert any(t.startswith(f"test_hook_{hook}") for t in tested), f"no test for hook {hook}"


def test_every_hook_is_documented():
    pm = make_plugin_manager()
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for hook in (name for name in dir(pm.hook) if not name.startswith("_")):
        assert f"`{hook}(" in docs, f"docs/plugins.md does not document {hook}"


async def test_minimal_plugin_in_the_docs_is_served(tmp_path, aiohttp_server, connect):
    """docs/plugins.md's minimal plugin, run as an agent file with hooks."""
    import re

    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings

    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", docs, flags=re.S) if "hookimpl" in b)
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(code, encoding="utf-8")
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(files=(str(plugin),)))
    hooks = {c.name for c in pm.get_hookcallers(pm.get_plugin(f"file:{plugin}"))}
    assert hooks == {"register_agents", "prepare_app", "observe_event"}
    server = await aiohttp_server(create_app(Settings(), registry, pm=pm))
    client = await connect(server)
    sid = await client.create_session("shouter")
    assert (await client.turn(sid, "hello"))[-1]["event"] == "agent.final_answer"
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/-/shouter/stats")) as response:
            assert await response.json() == {"plugin": "shouter"}


async def test_hook_authenticate_example_in_the_docs_names_the_principal(
    tmp_path, aiohttp_server, monkeypatch
):
    """docs/plugins.md's cookie plugin, served as a file beside an agent: the signed cookie
    lets in as its user, who owns the sessions it creates; anything else gets 401; a
    configured token is checked first."""
    import re

    from myagent_ws.app import create_app
    from myagent_ws.keys import SESSIONS
    from myagent_ws.settings import Settings

    monkeypatch.setenv("LOGIN_COOKIE_SECRET", "test-secret")
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "authenticate" in b)
    plugin = tmp_path / "cookie_auth.py"
    plugin.write_text(code, encoding="utf-8")
    pm = make_plugin_manager()
    registry = build_registry(pm, AgentSources(files=(WEATHER, str(plugin))))
    app = create_app(Settings(auth_tokens=("ops-token",)), registry, pm=pm)
    server = await aiohttp_server(app)
    sign = pm.get_plugin(f"file:{plugin}").signature
    assert (await upgrade(server))[0] == 401
    assert (await upgrade(server, Cookie=f"user=mallory.{sign('alice')}"))[0] == 401
    assert (await upgrade(server, Authorization="Bearer ops-token"))[0] == 101
    async with aiohttp.ClientSession(cookies={"user": f"alice.{sign('alice')}"}) as http:
        async with http.ws_connect(server.make_url("/")) as ws:
            assert (await ws.receive_json(timeout=5))["event"] == "system.connected"
            await ws.send_json({"event": "user.create_session"})
            created = await ws.receive_json(timeout=5)
    assert app[SESSIONS].sessions[created["session_id"]].owner == "alice"


class AsyncAuth:
    @hookimpl
    async def authenticate(self, request):
        await asyncio.sleep(0)
        return request.headers.get("X-User") or None


class AsyncPass:
    """Asked first (registered last), passes on every request: the next one must be asked."""

    @hookimpl
    async def authenticate(self, request):
        await asyncio.sleep(0)
        return None


class BrokenAuth:
    @hookimpl
    def authenticate(self, request):
        if request.headers.get("X-Break") == "raise":
            raise RuntimeError("database at db.internal:5432 is down")
        return 42  # not a principal


async def test_hook_authenticate_async_and_broken_hooks(aiohttp_server, caplog):
    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings

    pm = make_plugin_manager()
    pm.register(AsyncAuth())
    pm.register(AsyncPass())
    registry = build_registry(pm, AgentSources(files=(WEATHER,)))
    server = await aiohttp_server(create_app(Settings(), registry, pm=pm))
    assert (await upgrade(server, **{"X-User": "carol"}))[0] == 101
    assert (await upgrade(server))[0] == 401

    broken = make_plugin_manager()
    broken.register(BrokenAuth())
    registry = build_registry(broken, AgentSources(files=(WEATHER,)))
    server = await aiohttp_server(create_app(Settings(), registry, pm=broken))
    for headers in ({"X-Break": "raise"}, {}):
        status, body, _ = await ticket(server, **headers)
        assert status == 500
        assert "db.internal" not in body["message"] and "see its log" in body["message"]
    assert "db.internal:5432" in caplog.text  # the log keeps the detail
    assert (await upgrade(server))[0] == 500
