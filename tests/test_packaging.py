"""Built wheels (host and plugins), installed with their dependencies into a directory that
is the only place Python imports from, find their schemas and serve agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from tests.conftest import ROOT, WEATHER

# -S: no site-packages, so only what was installed into the target directory is importable.
PYTHON = [sys.executable, "-S"]
PROJECTS = (ROOT, ROOT / "plugins" / "weather", ROOT / "plugins" / "calculator")


def run(*command: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def test_wheels_ship_schemas_and_serve_agents_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    for project in PROJECTS:
        built = run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(project),
        )
        assert built.returncode == 0, built.stderr
    (host,) = wheels.glob("myagent_ws-*.whl")
    shipped = zipfile.ZipFile(host).namelist()
    schema_files = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert schema_files and all(f"myagent_ws/schemas/{name}" in shipped for name in schema_files)

    target = tmp_path / "site"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--ignore-installed",
        "--target",
        str(target),
        *map(str, sorted(wheels.glob("*.whl"))),
    )
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}

    probe = (
        "import json, myagent_ws, myagent, myagent_ws_weather; from myagent_ws.protocol import"
        ' Protocol; p = Protocol(); p.decode(\'{"event": "user.create_session"}\');'
        "print(json.dumps([m.__file__ for m in (myagent_ws, myagent, myagent_ws_weather)]"
        " + [len(p.schemas)]))"
    )
    result = run(*PYTHON, "-c", probe, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    *files, count = json.loads(result.stdout)
    assert all(path.startswith(str(target)) for path in files), files
    assert count == len(schema_files)

    from_file = run(*PYTHON, "-m", "myagent_ws", "agents", WEATHER, cwd=tmp_path, env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert "weather-assistant" in from_file.stdout

    # The plugins, installed from their wheels, are found through their entry points.
    served = run(
        *PYTHON,
        "-m",
        "myagent_ws",
        "agents",
        "--plugin",
        "weather",
        "--plugin",
        "calculator",
        cwd=tmp_path,
        env=env,
    )
    assert served.returncode == 0, served.stderr
    rows = served.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["weather-assistant", "calculator"]
