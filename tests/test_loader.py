"""Agent files: `agent`, `create_agent()` and `agents = [...]`, one instance per session."""

from __future__ import annotations

import pytest

from myagent_ws.loader import load_agent_files
from myagent_ws.registry import StartupError

HEADER = "from myagent import FunctionModel, create_react_agent\n"


def write(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return str(path)


def test_create_agent_factory_is_called_for_every_session(tmp_path):
    path = write(
        tmp_path,
        "factory.py",
        "CALLS = []\n"
        "def create_agent():\n"
        "    CALLS.append(1)\n"
        "    return create_react_agent(name='made', description='built per session')\n",
    )
    (spec,) = load_agent_files([path])
    assert (spec.name, spec.description, spec.source) == ("made", "built per session", path)
    first, second = spec.factory(), spec.factory()
    assert first is not second


def test_agents_list_serves_each_and_clones_per_session(tmp_path):
    path = write(
        tmp_path,
        "several.py",
        "agents = [create_react_agent(name='one'), create_react_agent(name='two')]\n",
    )
    specs = load_agent_files([path])
    assert [s.name for s in specs] == ["one", "two"]
    a, b = specs[0].factory(), specs[0].factory()
    assert a is not b and a.name == b.name == "one"
    a.messages.append({"role": "user", "content": "only in a"})
    assert b.messages == []


async def test_each_session_gets_its_own_instance_over_the_wire(tmp_path, serve, connect):
    path = write(
        tmp_path,
        "memory.py",
        "def answer(messages, tools):\n"
        "    return str(sum(m['role'] == 'user' for m in messages))\n"
        "agent = create_react_agent(name='counter', model=FunctionModel(answer))\n",
    )
    server = await serve(files=(path,))
    client = await connect(server)
    a, b = await client.create_session(), await client.create_session()
    assert (await client.turn(a, "x"))[-1]["content"] == "1"
    assert (await client.turn(a, "y"))[-1]["content"] == "2"
    assert (await client.turn(b, "z"))[-1]["content"] == "1"


def test_a_non_agent_value_is_a_clear_startup_error(tmp_path):
    path = write(tmp_path, "wrong.py", "agent = 'not an agent'\n")
    with pytest.raises(StartupError, match="is not an agent"):
        load_agent_files([path])
