"""The server's garbage-collector settings rest on one fact: a turn leaves no cyclic
garbage, so reference counting frees everything and the collector can run rarely. These
tests hold that fact for offline and OpenAI-compatible turns, and check tune_gc()."""

from __future__ import annotations

import gc

from myagent import OpenAIModel
from tests.conftest import python_output
from tests.fake_openai import tool_calls


async def _cyclic_garbage_per_turn(client, turns: int) -> list[str]:
    """Run `turns` weather turns and return the types of the cyclic garbage they left."""
    sid = await client.create_session()

    async def turn() -> None:
        await client.send({"event": "user.message", "session_id": sid, "content": "Paris?"})
        await client.expect("agent.final_answer", timeout=10)

    await turn()  # first-use caches and lazy imports are not garbage
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(turns):
            await turn()
        gc.collect()
        return sorted({type(o).__qualname__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_an_offline_turn_leaves_no_cyclic_garbage(serve, connect) -> None:
    client = await connect(await serve())
    assert await _cyclic_garbage_per_turn(client, 5) == []


async def test_an_openai_turn_leaves_no_cyclic_garbage(serve, connect, fake_openai) -> None:
    for _ in range(6):
        fake_openai.script += [tool_calls(("c1", "get_weather", '{"city": "Paris"}')), "Sunny."]
    model = OpenAIModel(model="fake", base_url=fake_openai.base_url, api_key="k")
    client = await connect(await serve(model=model))
    try:
        assert await _cyclic_garbage_per_turn(client, 5) == []
    finally:
        await model.aclose()


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    script = (
        "import gc\n"
        "from myagent_ws.cli import GC_YOUNG_THRESHOLD, tune_gc\n"
        "tune_gc()\n"
        "print(gc.get_freeze_count() > 10_000, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)\n"
    )
    assert python_output(script).split() == ["True", "True"]
