"""A built wheel, installed outside the source tree, finds its schemas and serves agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from tests.conftest import ROOT, WEATHER


def test_wheel_ships_schemas_and_runs_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("myagent_ws-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    schema_files = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert schema_files and all(f"myagent_ws/schemas/{name}" in shipped for name in schema_files)

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import json, myagent_ws, myagent; from myagent_ws.protocol import Protocol;"
        'p = Protocol(); p.decode(\'{"event": "user.create_session"}\');'
        "print(json.dumps([myagent_ws.__file__, myagent.__file__, len(p.schemas)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ws_file, sdk_file, count = json.loads(result.stdout)
    assert ws_file.startswith(str(target)) and sdk_file.startswith(str(target))
    assert count == len(schema_files)

    agents = subprocess.run(
        [sys.executable, "-m", "myagent_ws", "agents", WEATHER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agents.returncode == 0, agents.stderr
    assert "weather-assistant" in agents.stdout
