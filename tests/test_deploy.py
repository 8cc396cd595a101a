"""The deployment files (Dockerfile, deploy/docker-compose.yml, deploy/nginx.conf,
deploy/k8s/) stay true: every flag and MYAGENT_WS_ variable they name is a real setting of
`myagent-ws server`, the command and settings they run parse and name files that exist,
they agree with each other, and deploy/nginx.conf, run by a real nginx, proxies WebSocket
sessions round robin over real server processes.

There is no Docker engine or Kubernetes here: the YAML is read with a few regexes (PyYAML
is not a dependency), against the layout these files use."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from myagent_ws.cli import server as server_command
from myagent_ws.settings import Settings
from tests.client import TERMINAL, names
from tests.cluster import (
    NGINX_CONF,
    REDIS_URL,
    Cluster,
    Nginx,
    delete_keys,
    fresh_prefix,
    nginx_config,
    redis_keys,
    require_redis,
)
from tests.conftest import BEIJING, CLI, ROOT, WEATHER, free_port

DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DEPLOYMENT, SERVICE, K8S_REDIS = K8S / "deployment.yaml", K8S / "service.yaml", K8S / "redis.yaml"


# --- reading the files --------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            instructions.append((name.upper(), rest.strip()))
    return instructions


def docker(name: str) -> list[str]:
    return [rest for instruction, rest in dockerfile() if instruction == name]


def docker_env() -> dict[str, str]:
    pairs = [word.split("=", 1) for rest in docker("ENV") for word in shlex.split(rest)]
    return dict(pairs)


def docker_healthcheck() -> tuple[str, list[str]]:
    """(its options, its exec-form command)."""
    (rest,) = docker("HEALTHCHECK")
    options, _, command = rest.partition(" CMD ")
    return options, json.loads(command)


def section(text: str, *path: str) -> str:
    """The block-YAML lines nested under `path` (each key the first one found inside the
    previous block; a key may start a list item)."""
    for key in path:
        found = re.search(rf"^([ ]*)(?:- )?{re.escape(key)}:[ ]*(?:#.*)?$", text, re.M)
        assert found, f"no {key!r} block in:\n{text}"
        indent = len(found[1])
        body = []
        for line in text[found.end() + 1 :].splitlines():
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#") and len(line) - len(stripped) <= indent:
                break
            body.append(line)
        text = "\n".join(body)
    return text


def scalar(text: str, key: str) -> str:
    """The value of the first `key: value` line in `text`, unquoted."""
    found = re.search(rf"^[ ]*(?:- )?{re.escape(key)}:[ ]+(.+?)[ ]*$", text, re.M)
    assert found, f"no {key!r} value in:\n{text}"
    value = found[1].split(" #")[0].strip()
    return json.loads(value) if value.startswith('"') else value.strip("'")


def flow_list(text: str, key: str) -> list[str]:
    """A `key: ["a", "b"]` list (the files write commands in this JSON-compatible form)."""
    found = re.search(rf"^[ ]*(?:- )?{re.escape(key)}:[ ]+(\[.*\])[ ]*$", text, re.M)
    assert found, f"no {key!r} list in:\n{text}"
    return json.loads(found[1])


def compose_service(name: str) -> str:
    return section(COMPOSE.read_text(encoding="utf-8"), "services", name)


def compose_env() -> dict[str, str]:
    block = section(compose_service("app"), "environment")
    return dict(re.findall(r"^[ ]+([A-Z][A-Z0-9_]*):[ ]+\"?([^\"\n#]*?)\"?[ ]*$", block, re.M))


def k8s_container() -> str:
    return section(DEPLOYMENT.read_text(encoding="utf-8"), "containers")


def k8s_env() -> dict[str, str]:
    block = section(k8s_container(), "env")
    pairs = re.findall(r"^[ ]+- name:[ ]+(\S+)\n[ ]+value:[ ]+\"?([^\"\n]*)\"?", block, re.M)
    return dict(pairs)


def deployments() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each way of running the server: (its command, the environment it gets). The image's
    ENV applies under compose and Kubernetes too; theirs is added on top."""
    image_env = docker_env()
    return {
        "Dockerfile": (json.loads(docker("CMD")[-1]), image_env),
        "docker-compose.yml": (
            flow_list(compose_service("app"), "command"),
            {**image_env, **compose_env()},
        ),
        "k8s/deployment.yaml": (flow_list(k8s_container(), "command"), {**image_env, **k8s_env()}),
    }


def server_help() -> str:
    done = subprocess.run(
        [CLI, "server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def settings_from(command: list[str], env: dict[str, str], monkeypatch) -> tuple[Settings, Any]:
    """What `command` (myagent-ws server ...) with `env` would serve with, parsed by the
    real CLI (flags, then the environment, then the defaults), and its agent files."""
    assert command[:2] == ["myagent-ws", "server"], command
    for name in list(os.environ):
        if name.startswith("MYAGENT_WS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ctx = server_command.make_context("server", command[2:])
    fields = {field.name for field in dataclasses.fields(Settings)}
    given = {k: v for k, v in ctx.params.items() if k in fields and v is not None}
    return Settings(**given), ctx.params["files"]


# --- (a) what the files name exists --------------------------------------------------------


def test_every_flag_and_variable_the_deployment_files_name_is_a_real_server_option():
    shown = server_help()
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", shown))
    variables = set(re.findall(r"MYAGENT_WS_[A-Z0-9_]+", shown))
    assert {"--store", "--store-prefix", "--host", "--port"} <= flags
    assert {"MYAGENT_WS_STORE", "MYAGENT_WS_HOST", "MYAGENT_WS_PORT"} <= variables
    files = [DOCKERFILE, COMPOSE, *sorted(K8S.glob("*.yaml"))]
    for path in files:
        named = set(re.findall(r"MYAGENT_WS_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
        assert named <= variables, f"{path.name} names unknown settings: {named - variables}"
    for where, (command, env) in deployments().items():
        used = {word.split("=")[0] for word in command if word.startswith("--")}
        assert used <= flags, f"{where} runs unknown flags: {used - flags}"
        assert set(n for n in env if n.startswith("MYAGENT_WS_")) <= variables, where


def test_every_deployment_runs_settings_the_server_accepts_and_agent_files_that_exist(
    monkeypatch,
):
    for where, (command, env) in deployments().items():
        settings, files = settings_from(command, env, monkeypatch)
        assert files, f"{where} serves no agent file"
        for name in files:  # relative to WORKDIR /app, a copy of this checkout
            assert (ROOT / name).is_file(), f"{where}: {name} does not exist"
        assert (settings.host, settings.port) == ("0.0.0.0", 8080), where
        if where == "Dockerfile":
            assert settings.store == "memory"
        else:
            assert settings.store == "redis://redis:6379/0", where
    assert docker("WORKDIR") == ["/app"] and "COPY . /app" in [f"COPY {r}" for r in docker("COPY")]


def test_deployment_settings_that_settings_reject_would_be_caught(monkeypatch):
    """The check above is not vacuous: a store the server refuses fails it."""
    with pytest.raises(ValueError, match="store must be memory or a redis"):
        settings_from(["myagent-ws", "server", WEATHER], {"MYAGENT_WS_STORE": "mem"}, monkeypatch)


# --- (b) the image -------------------------------------------------------------------------


def test_dockerfile_runs_as_non_root_with_a_curl_free_healthcheck_and_the_shared_command():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    order = [name for name, _ in instructions]
    user = docker("USER")
    assert user, "no USER: the server would run as root"
    assert user[-1].split(":")[0] not in ("root", "0")
    # The last USER comes after the last RUN, so the CMD runs as it.
    assert max(i for i, n in enumerate(order) if n == "USER") > max(
        i for i, n in enumerate(order) if n == "RUN"
    )
    (run,) = docker("RUN")
    assert "pip install --no-cache-dir /app /app/plugins/weather /app/plugins/calculator" in run
    for plugin in ("weather", "calculator"):
        assert (ROOT / "plugins" / plugin / "pyproject.toml").is_file()
    # Nothing is compiled, so no build tools are installed (or left behind).
    assert not re.search(r"apt-get|apk |gcc|build-essential", run), run
    assert docker("EXPOSE") == ["8080"]
    options, check = docker_healthcheck()
    assert check[:2] == ["python", "-c"] and "/health" in check[2] and "curl" not in check[2]
    assert "--interval=" in options and "--timeout=" in options
    command = json.loads(docker("CMD")[-1])
    assert command[:3] == ["myagent-ws", "server", "examples/ws_weather_agent.py"]
    for where, (run_command, _) in deployments().items():
        assert run_command == command, f"{where} runs {run_command}, the image {command}"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv"} <= set(ignored)


def test_dockerfile_healthcheck_passes_on_a_live_server_and_fails_without_one(cli_server):
    """The HEALTHCHECK's own command, run by this Python (the image's `python`)."""
    _, check = docker_healthcheck()
    server = cli_server(WEATHER)

    def healthcheck(port: int) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYAGENT_WS_")}
        env["MYAGENT_WS_PORT"] = str(port)
        command = [sys.executable, *check[1:]]
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert healthcheck(server.port) == 0
    assert healthcheck(free_port()) != 0  # nothing listens there


# --- (c) compose and Kubernetes ------------------------------------------------------------


def test_compose_runs_three_app_replicas_on_redis_behind_nginx():
    assert (DEPLOY / scalar(compose_service("app"), "build")).resolve() == ROOT
    app = compose_service("app")
    assert scalar(section(app, "deploy"), "replicas") == "3"
    assert compose_env()["MYAGENT_WS_STORE"] == "redis://redis:6379/0"  # the service below
    assert compose_env()["MYAGENT_WS_HOST"] == "0.0.0.0"
    check = flow_list(section(app, "healthcheck"), "test")
    assert check[:3] == ["CMD", "python", "-c"] and "127.0.0.1:8080/health" in check[3]
    assert "curl" not in check[3]
    assert scalar(compose_service("redis"), "image") == "redis:7-alpine"
    nginx = compose_service("nginx")
    assert scalar(nginx, "image").startswith("nginx:")
    volumes = re.findall(r"^[ ]+- \"?([^\"\n]+)\"?$", section(nginx, "volumes"), re.M)
    assert any(v.split(":")[:2] == ["./nginx.conf", "/etc/nginx/nginx.conf"] for v in volumes)
    assert (DEPLOY / "nginx.conf").is_file()
    ports = re.findall(r"^[ ]+- \"?([^\"\n]+)\"?$", section(nginx, "ports"), re.M)
    assert ports == ["8080:80"]
    # Graceful drain fits in the stop grace period.
    grace = int(scalar(app, "stop_grace_period").removesuffix("s"))
    assert grace > Settings().drain_timeout_s + Settings().shutdown_timeout_s


def test_kubernetes_probes_grace_period_resources_and_service_without_affinity():
    deployment = DEPLOYMENT.read_text(encoding="utf-8")
    spec = section(deployment, "spec")
    assert scalar(spec, "replicas") == "3"
    container = k8s_container()
    port = int(scalar(section(container, "ports"), "containerPort"))
    assert port == 8080
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = section(container, probe, "httpGet")
        assert scalar(get, "path") == path, probe
        assert scalar(get, "port") in (str(port), scalar(section(container, "ports"), "name"))
    grace = int(scalar(section(spec, "template"), "terminationGracePeriodSeconds"))
    settings = Settings()  # the deployment leaves the drain settings at their defaults
    assert not {"MYAGENT_WS_DRAIN_TIMEOUT_S", "MYAGENT_WS_SHUTDOWN_TIMEOUT_S"} & set(k8s_env())
    assert grace > settings.drain_timeout_s + settings.shutdown_timeout_s
    resources = section(container, "resources")
    assert scalar(section(resources, "requests"), "cpu") and scalar(resources, "memory")
    assert scalar(container, "image") == scalar(compose_service("app"), "image")

    service = SERVICE.read_text(encoding="utf-8")
    assert "sessionAffinity" not in re.sub(r"#.*", "", service)
    assert scalar(service, "type") == "ClusterIP"
    ports = section(service, "ports")
    assert scalar(ports, "port") == "8080" and scalar(ports, "targetPort") in ("8080", "http")
    label = scalar(section(service, "selector"), "app")
    assert label == scalar(section(section(spec, "template"), "labels"), "app")

    # The store points at the reference Redis's Service, which says to use a real one.
    redis = K8S_REDIS.read_text(encoding="utf-8")
    redis_service = redis.split("\n---\n")[1]
    assert scalar(redis_service, "kind") == "Service"
    assert k8s_env()["MYAGENT_WS_STORE"] == (
        f"redis://{scalar(redis_service, 'name')}:{scalar(redis_service, 'port')}/0"
    )
    assert "production" in redis.lower() and "managed" in redis.lower()


# --- (d) nginx ------------------------------------------------------------------------------


def test_nginx_conf_upgrades_websockets_round_robin_with_long_timeouts():
    text = NGINX_CONF.read_text(encoding="utf-8")
    conf = re.sub(r"#[^\n]*", "", text)
    assert re.search(r"\bevents\s*\{", conf) and re.search(r"\bhttp\s*\{", conf)
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{", conf)
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $remote_addr;",  # the edge: set, never appended
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_buffering off;",
        "proxy_pass http://myagent_ws;",
        "listen 80;",
        "server app:8080;",  # compose's app service, on the image's port
    ):
        assert directive in conf, directive
    # Idle WebSockets outlive heartbeats by far, in both directions.
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = re.findall(rf"{name} (\d+)s;", conf)
        assert int(value) >= 3600, name
    upstream = re.search(r"upstream myagent_ws \{(.*?)\}", conf, re.S)[1]
    assert not re.search(r"\b(ip_hash|hash|sticky|least_conn)\b", upstream)
    # Nothing that needs root when run outside the container (the tests run it so).
    assert not re.search(r"^\s*user\s", conf, re.M)
    paths = re.findall(r"^\s*(pid|\w+_temp_path)\s+(\S+);", conf, re.M)
    assert len(paths) == 6 and all(not p.startswith("/") for _, p in paths), paths
    assert re.search(r"^error_log stderr", conf, re.M)


def test_nginx_substitution_fills_in_only_the_port_and_the_servers_and_fails_loudly():
    text = NGINX_CONF.read_text(encoding="utf-8")
    rendered = nginx_config(text, 18080, ["127.0.0.1:1", "127.0.0.1:2"])
    before, after = text.splitlines(), rendered.splitlines()
    changed = [line for line in after if line not in before]
    assert sorted(line.strip() for line in changed) == [
        "listen 127.0.0.1:18080;",
        "server 127.0.0.1:1;",
        "server 127.0.0.1:2;",
    ]
    assert len(after) == len(before) + 1
    with pytest.raises(AssertionError, match="listen 80"):
        nginx_config(text.replace("listen 80;", "listen 81;"), 1, ["127.0.0.1:1"])
    with pytest.raises(AssertionError, match="server app:8080"):
        nginx_config(text.replace("server app:8080;", "server web:8080;"), 1, ["127.0.0.1:1"])


def test_nginx_accepts_the_config(tmp_path):
    nginx = Nginx(["127.0.0.1:9"], workdir=tmp_path)
    checked = nginx.test_config()
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


# --- (e) nginx in front of real server processes --------------------------------------------


async def test_a_websocket_session_through_nginx_completes_a_turn(
    cluster_factory, nginx_factory, connect
):
    cluster = await cluster_factory(3, store=None)  # memory stores: one turn, one node
    nginx = await nginx_factory(cluster)
    client = await connect(nginx)  # system.connected came through the upgrade
    sid = await client.create_session("weather-assistant")
    created = client.received[-1]
    assert created["metadata"]["agent"] == "weather-assistant"
    assert created["metadata"]["llm"]["offline"] is True
    events = await client.turn(sid, BEIJING, timeout=20)
    assert names(events)[-1] == "agent.final_answer", names(events)
    assert "agent.tool_call" in names(events)
    assert "25°C" in events[-1]["content"]
    assert not set(names(events[:-1])) & TERMINAL


async def health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(base + "/health") as response:
        assert response.status == 200
        return await response.json()


async def test_websocket_connections_through_nginx_spread_over_every_node(
    cluster_factory, nginx_factory, connect
):
    """Round robin, no stickiness: three connections from one client address land on
    three different processes (each counts its own connections in /health)."""
    cluster = await cluster_factory(3, store=None)
    nginx = await nginx_factory(cluster)
    clients = [await connect(nginx) for _ in range(3)]
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            while True:
                counts = [(await health(http, node.http))["connections"] for node in cluster]
                if counts == [1, 1, 1]:
                    break
                assert sum(counts) <= 3, counts
                await asyncio.sleep(0.05)
    for client in clients:
        await client.ws.close()


async def test_health_through_nginx_reaches_every_node(cluster_factory, nginx_factory):
    """/health names its process ("node"); 12 requests through nginx meet all three."""
    cluster = await cluster_factory(3, store=None)
    nginx = await nginx_factory(cluster)
    async with aiohttp.ClientSession() as http:
        direct = [await health(http, node.http) for node in cluster]
        assert all("node" in h for h in direct), f"/health has no node field: {direct[0]}"
        ids = {h["node"] for h in direct}
        assert len(ids) == 3, "each process needs its own node id"
        seen = [(await health(http, nginx.http))["node"] for _ in range(12)]
    assert set(seen) == ids, seen


# --- the harness itself ----------------------------------------------------------------------


async def test_cluster_stop_deletes_only_its_own_redis_keys(cluster_factory):
    require_redis()
    import redis.asyncio as aioredis

    cluster = await cluster_factory(0)  # no processes: the key clean-up alone
    other = fresh_prefix()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.set(cluster.prefix + "a", "1")
        await client.set(cluster.prefix + "b:c", "1")
        await client.set(other + "a", "1")
        assert sorted(await cluster.keys()) == [cluster.prefix + "a", cluster.prefix + "b:c"]
        await cluster.stop()
        assert await redis_keys(cluster.prefix) == []
        assert await redis_keys(other) == [other + "a"]
    finally:
        await delete_keys(other)
        await client.aclose()


async def test_cluster_nodes_get_the_redis_store_and_a_prefix_of_their_own(cluster_factory):
    cluster = await cluster_factory(2)
    assert isinstance(cluster, Cluster) and len(cluster) == 2
    for node in cluster:
        command = node.proc.args
        assert command[command.index("--store") + 1] == REDIS_URL
        assert command[command.index("--store-prefix") + 1] == cluster.prefix
        assert node.health["status"] == "ok"
    assert cluster.prefix.startswith("myagent-ws-test:")
    cluster.kill(1)  # SIGKILL: gone at once, the other node unaffected
    assert await cluster[1].wait_exit(timeout=10) == -signal.SIGKILL
    assert (await cluster[0].wait_health())["status"] == "ok"
    cluster.kill(0, signal.SIGTERM)  # an idle node drains at once and exits 0
    assert await cluster[0].wait_exit(timeout=20) == 0
    await cluster.stop()
    assert all(not node.alive() for node in cluster)
