"""Operator HTTP endpoints: health, readiness, Prometheus metrics, schemas, AsyncAPI."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
from jsonschema import Draft7Validator
from prometheus_client.parser import text_string_to_metric_families

from myagent_ws.keys import READY
from tests.agents import waiting_agent
from tests.conftest import WEATHER, free_port

ASYNCAPI_SCHEMA = (
    Path(sys.prefix) / "npm" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
)


async def get(server, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url(path)) as response:
            return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_a_turn_just_made(serve, connect):
    server = await serve()
    client = await connect(server)
    sid = await client.create_session()
    events = await client.turn(sid, "北京今天天气怎么样？")
    await client.send("not json")
    await client.error("invalid_json")
    status, text = await get(server, "/metrics")
    assert status == 200
    found = samples(text)
    assert found[("myagent_ws_connections", ())] == 1
    assert found[("myagent_ws_sessions", ())] == 1
    assert found[("myagent_ws_turns_started_total", ())] == 1
    assert found[("myagent_ws_turns_finished_total", (("outcome", "final_answer"),))] == 1
    sent = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "myagent_ws_events_sent_total"
    }
    counted = {}
    for event in [*client.received[1:2], *events]:  # session_created + the turn
        counted[event["event"]] = counted.get(event["event"], 0) + 1
    assert sent == counted
    assert found[("myagent_ws_inbound_errors_total", (("code", "invalid_json"),))] == 1
    assert found[("myagent_ws_turn_seconds_count", ())] == 1
    assert found[("myagent_ws_turn_first_event_seconds_count", ())] == 1


async def test_ready_is_true_when_serving_and_false_while_draining(serve, connect):
    server = await serve(files=(), agents=(waiting_agent(),))
    assert await get(server, "/ready") == (200, json.dumps({"ready": True}))
    client = await connect(server)
    sid = await client.create_session()
    await client.send({"event": "user.message", "session_id": sid, "content": "drain-test"})
    await client.expect("agent.tool_call")
    # Shutdown starts by clearing readiness, then drains sessions.
    closing = asyncio.create_task(server.close())
    await client.expect("agent.interrupted")
    assert not server.app[READY].is_set()
    await closing


async def test_not_ready_before_startup():
    from myagent_ws.app import create_app
    from myagent_ws.settings import Settings
    from tests.conftest import make_registry

    app = create_app(Settings(), make_registry((WEATHER,)))
    assert not app[READY].is_set()


async def test_schema_files_are_served(serve):
    server = await serve()
    status, text = await get(server, "/schemas/user.message.json")
    assert status == 200
    served = json.loads(text)
    on_disk = json.loads((Path(__file__).parents[1] / "schemas" / "user.message.json").read_text())
    assert served == on_disk
    assert (await get(server, "/schemas/nosuch.json"))[0] == 404


async def test_asyncapi_document_is_valid_asyncapi_3(serve):
    assert ASYNCAPI_SCHEMA.exists(), "make install puts @asyncapi/specs under .venv/npm"
    server = await serve()
    status, text = await get(server, "/asyncapi.json")
    assert status == 200
    document = json.loads(text)
    official = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(Draft7Validator(official).iter_errors(document), key=str)
    assert not errors, "\n".join(str(e)[:300] for e in errors[:3])
    tampered = json.loads(text)
    next(iter(tampered["operations"].values()))["action"] = "publish"  # AsyncAPI 2 wording
    assert any(Draft7Validator(official).iter_errors(tampered)), "the validator checks operations"
    assert document["asyncapi"] == "3.0.0"
    messages = document["components"]["messages"]
    schema_names = {p.stem for p in (Path(__file__).parents[1] / "schemas").glob("*.json")}
    assert set(messages) == schema_names - {"envelope"}
    actions = {
        op["messages"][0]["$ref"].rsplit("/", 1)[1]: op["action"]
        for op in document["operations"].values()
    }
    assert actions["user.message"] == "receive" and actions["agent.final_answer"] == "send"


async def test_asyncapi_payload_schemas_validate_real_frames(serve, connect):
    """The payloads in /asyncapi.json accept what the server really sends and receives."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    server = await serve()
    document = json.loads((await get(server, "/asyncapi.json"))[1])
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(document))

    def check(frame: dict) -> None:
        schema = {"$ref": f"urn:doc#/components/schemas/{frame['event']}"}
        Draft202012Validator(schema, registry=registry).validate(frame)

    client = await connect(server)
    sid = await client.create_session()
    for frame in [*client.received, *(await client.turn(sid, "Tokyo weather?"))]:
        check(frame)
    check({"event": "user.message", "session_id": sid, "content": "hi"})


def test_health_port_serves_operator_endpoints(cli_server):
    import urllib.request

    health_port = free_port()
    server = cli_server(WEATHER, "--health-port", str(health_port))
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=5) as response:
        assert json.load(response)["status"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/ready", timeout=5) as response:
        assert json.load(response) == {"ready": True}
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as response:
        assert b"myagent_ws_connections" in response.read()
    output = server.stop()
    assert f"health: http://127.0.0.1:{health_port}/health" in output
