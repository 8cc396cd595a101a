"""The README's claims are checked: its code runs and it documents every setting."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from myagent_ws.settings import Settings
from tests.conftest import EXAMPLES, ROOT, WEATHER

README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_block(marker: str) -> str:
    return next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if marker in b)


def test_every_setting_is_documented():
    for field in dataclasses.fields(Settings):
        assert f"`{field.name}`" in README, f"README does not document Settings.{field.name}"


def test_readme_function_model_example_runs():
    code = python_block("FunctionModel(fake_llm)")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=EXAMPLES, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "It is Hello, Ada!"


def test_readme_websockets_client_runs_against_the_server(cli_server):
    server = cli_server(WEATHER, host="localhost")
    code = python_block("import asyncio, json, websockets").replace("8080", str(server.port))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "'event': 'system.connected'" in lines[0]
    assert lines[-1].startswith("agent.final_answer") and "Paris" in lines[-1]
    assert any(line.startswith("agent.tool_call") for line in lines)


def test_readme_python_client_example_runs_against_the_server(cli_server):
    server = cli_server(WEATHER)
    code = python_block("from myagent_ws.client import connect").replace("8080", str(server.port))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agent.thinking")
    assert any(line.startswith("agent.tool_call") for line in lines)
    assert any(line.startswith("agent.final_answer") and "北京" in line for line in lines)
    assert "Shanghai" in lines[-1] or "上海" in lines[-1]
