"""The real `myagent-ws` console script: banner, errors, Ctrl-C, and the seed's client snippets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import websockets

from tests.conftest import CLI, GREETER, ROOT, WEATHER, python_output, reference

SEED = reference("seed-ws-server-README.md")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def seed_snippet(language: str, marker: str) -> str:
    """A code block of the seed README, verbatim."""
    text = SEED.read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if marker in b)


def test_banner_names_file_agent_offline_model_and_url(cli_server):
    server = cli_server(WEATHER)
    output = server.stop()
    assert f"Loading agent file: {WEATHER}" in output
    assert "Agent loaded: weather-assistant" in output
    assert "offline model" in output
    assert f"ws://127.0.0.1:{server.port}" in output
    # uvloop is in the test extra, so every CLI test here serves on it.
    assert "event loop: uvloop" in output
    assert "sessions: in this process" in output
    assert "🔓 auth: off: anyone who reaches the port may connect" in output
    assert "browser origins: this server's own, localhost and 127.0.0.1 on any port" in output
    assert server.proc.returncode == 0


def test_banner_announces_auth_on(cli_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:a-token\nalice:rotated-token\nbob:b-token\n", encoding="utf-8")
    server = cli_server(
        WEATHER,
        "--auth-tokens-file",
        str(tokens),
        "--auth-token",
        "ops-token",
        "--allowed-origin",
        "https://app.example.com",
    )
    output = server.stop()
    assert "🔒 auth: on: 3 principals by token" in output  # alice, bob, ops-token's
    assert "browser origins: this server's own, https://app.example.com" in output
    for token in ("a-token", "rotated-token", "b-token", "ops-token"):
        assert token not in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--auth-tokens-file", "/nonexistent/tokens"), "Cannot read --auth-tokens-file"),
        (("--allowed-origin", "app.example.com"), "is not an origin"),
        (("--forwarded-allow-ip", "proxy.local"), "is not an IP address or network"),
    ],
)
def test_bad_security_settings_exit_2_with_one_line(args, expected):
    result = run_cli("server", WEATHER, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: d / "missing.py", "no such file"),
        (lambda d: (d / "agent.txt").write_text("x") and d / "agent.txt", "must be a Python file"),
        (
            lambda d: (d / "broken.py").write_text("def oops(:\n") and d / "broken.py",
            "syntax error",
        ),
        (lambda d: (d / "empty.py").write_text("x = 1\n") and d / "empty.py", "defines no agent"),
        (
            lambda d: (
                (d / "raises.py").write_text("raise RuntimeError('boom')\n") and d / "raises.py"
            ),
            "RuntimeError: boom",
        ),
        (
            lambda d: (
                (d / "typo.py").write_text(
                    "from myagent import create_react_agent\n"
                    "agent = create_react_agent('a', confirm_tool=['pay'])\n"
                )
                and d / "typo.py"
            ),
            "Unknown agent option 'confirm_tool' (did you mean 'confirm_tools'?)",
        ),
    ],
    ids=["missing", "not-python", "syntax-error", "no-agent", "raises", "unknown-option"],
)
def test_bad_agent_file_prints_one_line_and_exits_2(tmp_path, setup, expected):
    path = str(setup(tmp_path))
    result = run_cli("server", path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and expected in errors[0] and path in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    debug = run_cli("server", path, "--debug")
    assert debug.returncode == 2
    if expected != "no such file" and expected != "must be a Python file":
        assert "Traceback" in debug.stderr


def test_seed_agent_unit_test_snippet_runs_unchanged():
    """The seed's `agent.arun` check, run next to the seed's agent file."""
    block = seed_snippet("bash", "agent.arun")
    code = next(part for part in block.split('python -c "')[1:] if "agent.arun" in part)
    code = code.rsplit('"', 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "examples",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_agents_command_lists_agents_from_files():
    result = run_cli("agents", WEATHER, GREETER)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "SOURCE"]
    assert lines[1].startswith("weather-assistant") and "get_weather, get_city_info" in lines[1]
    assert lines[2].startswith("greeter") and lines[2].endswith("greet")


def test_duplicate_agent_names_fail_at_startup():
    result = run_cli("server", WEATHER, WEATHER)
    assert result.returncode == 2
    assert "Two agents are named 'weather-assistant'" in result.stderr


async def test_ctrl_c_ends_open_sessions_and_exits_cleanly(cli_server):
    server = cli_server(WEATHER)
    async with websockets.connect(server.url) as ws:
        assert json.loads(await ws.recv())["event"] == "system.connected"
        await ws.send(json.dumps({"event": "user.create_session"}))
        created = json.loads(await ws.recv())
        assert created["event"] == "agent.session_created"
        output_task = asyncio.get_running_loop().run_in_executor(None, server.stop)
        end = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert end["event"] == "agent.session_end"
        assert end["session_id"] == created["session_id"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        await output_task
    assert server.proc.returncode == 0


async def test_debug_logs_every_frame(cli_server):
    server = cli_server(WEATHER, "--debug")
    async with websockets.connect(server.url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"event": "user.list_agents"}))
        await ws.recv()
    output = server.stop()
    assert '<< {"event": "user.list_agents"}' in output
    assert '>> {"event":"system.agents"' in output


def test_seed_python_snippet_runs_unchanged(cli_server):
    """The seed's `websockets` test, verbatim but for the port."""
    server = cli_server(WEATHER, host="localhost")
    block = seed_snippet("bash", "import websockets")
    code = next(part for part in block.split('python -c "')[1:] if "websockets" in part)
    code = code.rsplit('"', 1)[0].replace("8080", str(server.port))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "'event': 'system.connected'" in result.stdout


async def test_seed_python_client_gets_session_and_full_turn(cli_server):
    server = cli_server(WEATHER, host="localhost")
    async with websockets.connect(f"ws://localhost:{server.port}") as ws:
        await ws.send(json.dumps({"event": "user.create_session"}))
        events = [json.loads(await ws.recv()), json.loads(await ws.recv())]
        assert [e["event"] for e in events] == ["system.connected", "agent.session_created"]
        sid = events[1]["session_id"]
        await ws.send(
            json.dumps(
                {"event": "user.message", "session_id": sid, "content": "北京今天天气怎么样？"}
            )
        )
        seen = []
        async with asyncio.timeout(10):
            while not seen or seen[-1] != "agent.final_answer":
                seen.append(json.loads(await ws.recv())["event"])
    assert {
        "agent.thinking",
        "agent.tool_call",
        "agent.tool_result",
        "agent.partial_answer",
    } <= set(seen)


def test_seed_javascript_snippet_runs_unchanged_in_node(cli_server):
    """The seed's browser snippet, verbatim but for the port, in Node's built-in WebSocket."""
    node = shutil.which("node")
    assert node, "node is required (CI installs it)"
    server = cli_server(WEATHER, host="localhost")
    snippet = seed_snippet("javascript", "new WebSocket").replace("8080", str(server.port))
    harness = (
        "const seen = [];\n"
        "const log = console.log;\n"
        "console.log = (...args) => { const d = args[1];"
        " if (d && d.event) { seen.push(d.event); if (d.event === 'agent.final_answer') {"
        " log(JSON.stringify(seen)); process.exit(0); } } };\n"
        "setTimeout(() => { log('TIMEOUT ' + JSON.stringify(seen)); process.exit(3); }, 15000);\n"
    )
    flags = [] if _node_has_websocket(node) else ["--experimental-websocket"]
    result = subprocess.run(
        [node, *flags, "-e", harness + snippet], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen[:2] == ["system.connected", "agent.session_created"]
    assert seen[-1] == "agent.final_answer" and "agent.partial_answer" in seen


def _node_has_websocket(node: str) -> bool:
    check = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'undefined' ? 1 : 0)"])
    return check.returncode == 0


async def test_settings_from_the_environment_reach_the_server(cli_server):
    """MYAGENT_WS_* variables take effect in the real console script."""
    server = cli_server(WEATHER, env={"MYAGENT_WS_MAX_SESSIONS_PER_CONNECTION": "1"})
    async with websockets.connect(server.url) as ws:
        assert json.loads(await ws.recv())["event"] == "system.connected"
        await ws.send(json.dumps({"event": "user.create_session"}))
        assert json.loads(await ws.recv())["event"] == "agent.session_created"
        await ws.send(json.dumps({"event": "user.create_session"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert error["event"] == "system.error"
    assert error["metadata"]["code"] == "too_many_sessions"


def test_bad_setting_exits_2_naming_the_option():
    result = run_cli("server", WEATHER, env={**os.environ, "MYAGENT_WS_MAX_SESSIONS": "lots"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "MYAGENT_WS_MAX_SESSIONS" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


async def _weather_turn(url: str) -> str:
    async with websockets.connect(url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"event": "user.create_session"}))
        sid = json.loads(await ws.recv())["session_id"]
        await ws.send(json.dumps({"event": "user.message", "session_id": sid, "content": "Paris?"}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["event"].startswith(("agent.final", "agent.error")):
                return event["event"]


@pytest.mark.parametrize("debug", [False, True])
async def test_llm_requests_are_logged_only_with_debug(cli_server, fake_openai, debug):
    """No log line per LLM request (the HTTP client logs each at INFO) unless --debug."""
    from tests.fake_openai import tool_calls

    fake_openai.script += [tool_calls(("c1", "get_weather", '{"city": "Paris"}')), "Sunny."]
    flags = ["--llm-base-url", fake_openai.base_url, "--model", "fake", "--llm-api-key", "k"]
    server = cli_server(WEATHER, *flags, *(["--debug"] if debug else []))
    assert await _weather_turn(server.url) == "agent.final_answer"
    output = server.stop()
    assert len(fake_openai.requests) == 2
    assert ("HTTP Request: POST" in output) is debug


def test_open_files_limit_is_raised_to_the_hard_limit_and_a_short_one_is_named():
    """10,000 connections need 10,000 files: the soft limit (often 1,024) goes up to the
    hard one at start-up, and a hard limit still too low gets one line saying so."""
    script = (
        "import resource\n"
        "from myagent_ws.cli import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_open_files_limit(100))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)\n"
        "print(raise_open_files_limit(hard + 1))\n"
    )
    none, raised, note = python_output(script).splitlines()
    assert (none, raised) == ("None", "True")
    assert "open-files limit is" in note and "--max-sessions" in note


def test_event_loop_can_be_chosen(cli_server):
    server = cli_server(WEATHER, "--event-loop", "asyncio")
    assert "event loop: asyncio" in server.stop()


def test_without_uvloop_the_server_uses_asyncios_loop() -> None:
    script = (
        "import sys\n"
        "sys.modules['uvloop'] = None  # as if the extra were not installed\n"
        "from myagent_ws.cli import fast_event_loop\n"
        "print(fast_event_loop())\n"
    )
    assert python_output(script).strip() == "None"


def test_one_token_for_two_principals_exits_2(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:shared-token\n", encoding="utf-8")
    result = run_cli("server", WEATHER, "--auth-tokens-file", str(tokens), "--auth-token",
                     "shared-token")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "line 1: a token given for" in result.stderr and "is given again" in result.stderr
    assert "shared-token" not in result.stderr
