"""ReplayBuffer against a plain model of what it must hold: every frame from first_seq to
last_seq, byte for byte, whichever of them are compressed, through random appends,
evictions and trims; and the memory a never-acknowledging client leaves behind."""

from __future__ import annotations

import random

import orjson
import pytest

from myagent_ws.replay import BLOCK, KEEP_RAW, ReplayBuffer


def frame(seq: int, text: str) -> bytes:
    return orjson.dumps(
        {
            "event": "agent.partial_answer",
            "content": text,
            "metadata": {"is_final": False, "step": 2},
            "timestamp": f"2026-11-30T05:00:00.{seq % 1000:03d}+00:00",
            "session_id": "s_abcdefghijklmnopqrstuv",
            "seq": seq,
            "event_id": f"s_abcdefghijklmnopqrstuv:{seq}",
        }
    )


@pytest.mark.parametrize("seed", range(20))
def test_buffer_matches_a_model_through_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    buffer = ReplayBuffer(
        max_events=rng.choice([10, 100, 1000]), max_bytes=rng.choice([4096, 1 << 20])
    )
    model: dict[int, bytes] = {}
    seq = 0
    for _ in range(3000):
        op = rng.random()
        if op < 0.8:
            seq += 1
            data = frame(seq, rng.choice(["晴", "t0123456789 ", "x" * rng.randrange(1, 300), ""]))
            model[seq] = data
            if buffer.append(data):
                buffer.evict(rng.randint(buffer.first_seq, seq + 1))
        elif op < 0.9:
            buffer.trim(rng.randint(buffer.first_seq - 1, seq + 5))
        else:
            buffer.evict(rng.randint(buffer.first_seq, seq + 1))
        assert buffer.last_seq == seq
        assert len(buffer) == seq - buffer.first_seq + 1
        for probe in [rng.randint(max(1, buffer.first_seq - 3), seq + 3) for _ in range(5)]:
            expected = model.get(probe) if buffer.first_seq <= probe <= seq else None
            assert buffer.get(probe) == expected, (seed, probe)
    # Reading every frame in order, as a replay does, gives them all back exactly.
    assert [buffer.get(s) for s in range(buffer.first_seq, seq + 1)] == [
        model[s] for s in range(buffer.first_seq, seq + 1)
    ]


def test_eviction_never_drops_what_a_reader_still_has_to_send() -> None:
    buffer = ReplayBuffer(max_events=10, max_bytes=1 << 20)
    for seq in range(1, 201):
        if buffer.append(frame(seq, "t")):
            buffer.evict(5)  # a reader has sent only up to 4
    assert buffer.first_seq == 5 and buffer.get(5) == frame(5, "t")


def test_a_long_unacknowledged_conversation_is_held_compressed() -> None:
    """Three answers of 200 tokens (the seed's clients never ack): the buffer holds every
    frame, in a seventh of their size (the newest frames are kept as they are)."""
    buffer = ReplayBuffer(max_events=1000, max_bytes=1 << 20)
    frames = [frame(seq, f"t{seq:010d} ") for seq in range(1, 619)]
    for data in frames:
        assert not buffer.append(data)
    raw = sum(map(len, frames))
    assert buffer.first_seq == 1 and len(buffer) == 618
    assert buffer.bytes < raw / 7, (buffer.bytes, raw)
    assert buffer.bytes <= (BLOCK + KEEP_RAW) * len(frames[0]) + raw / 10
    assert [buffer.get(s) for s in range(1, 619)] == frames
