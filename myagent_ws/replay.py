"""A session's recent events, each encoded once, bounded in count and in bytes.

It is both the replay buffer and the outbound queue: every attached connection sends from
it at its own cursor, so a slow or reconnecting client costs no copy of the frames, a
replay is just a cursor set back, and live events follow replayed ones in `seq` order by
construction.

Clients that never acknowledge (the seed's do not) leave a whole conversation's frames
here, about 230 bytes per streamed token. So all but the newest frames are kept
zlib-compressed in blocks of `BLOCK`: a block of partial answers shrinks about 15 times,
for about a microsecond per frame, paid once. Live readers send from the newest frames,
which stay as they are; a reader that lags or replays decompresses a block once and sends
its frames from a one-block cache.
"""

from __future__ import annotations

import zlib

BLOCK = 32  # frames per compressed block
KEEP_RAW = 16  # the newest frames are never compressed: live readers send from them
# What frames have in common, so even the first frame of a block compresses well.
_DICTIONARY = (
    b'{"event":"agent.partial_answer","step_id":"call_","content":"","metadata":'
    b'{"is_final":false,"step":1,"tool":"","status":"success","duration_ms":0.0,'
    b'"call_id":"call_"},"timestamp":"2026-01-01T00:00:00.000+00:00","session_id":"s_'
)


class ReplayBuffer:
    """Frames with consecutive seqs: `first_seq` .. `last_seq`. The oldest are dropped past
    `max_events` or `max_bytes` (counted as held: compressed blocks at their compressed
    size), but never one that an attached reader has yet to send (readers that lag make
    their producer wait, so that overshoot stays small), or once every reader has
    acknowledged them (`trim`)."""

    __slots__ = (
        "_blocks",
        "_blocks_first",
        "_cache",
        "_raw",
        "_raw_first",
        "bytes",
        "first_seq",
        "max_bytes",
        "max_events",
    )

    def __init__(self, max_events: int, max_bytes: int) -> None:
        # Lists, not deques: both stay short, and an empty deque weighs 600 bytes.
        self._blocks: list[bytes] = []  # compressed, BLOCK frames each, oldest first
        self._blocks_first = 1  # the seq of the first frame in _blocks[0]
        self._raw: list[bytes] = []  # the newest frames (fewer than BLOCK + KEEP_RAW), as sent
        self._raw_first = 1  # the seq of _raw[0]
        self._cache: tuple[int, list[bytes]] | None = None  # one decompressed block
        self.first_seq = 1
        self.bytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def last_seq(self) -> int:
        """The seq of the newest frame (first_seq - 1 when empty)."""
        return self._raw_first + len(self._raw) - 1

    def append(self, frame: bytes) -> bool:
        """Add the frame of seq `last_seq + 1`; True if the buffer is now past its bounds
        and should `evict`."""
        raw = self._raw
        raw.append(frame)
        self.bytes += len(frame)
        if len(raw) >= BLOCK + KEEP_RAW:
            self._compress_oldest()
        return self.last_seq - self.first_seq >= self.max_events or self.bytes > self.max_bytes

    def _compress_oldest(self) -> None:
        raw = self._raw
        frames = raw[:BLOCK]
        del raw[:BLOCK]
        # Frames are compact JSON, which never holds a raw newline: it can separate them.
        compressor = zlib.compressobj(1, zdict=_DICTIONARY)
        block = compressor.compress(b"\n".join(frames)) + compressor.flush()
        self.bytes += len(block) - sum(map(len, frames))
        if not self._blocks:
            self._blocks_first = self._raw_first
        self._blocks.append(block)
        self._raw_first += BLOCK

    def evict(self, keep_from: int) -> None:
        """Drop the oldest frames while past the bounds, but none from `keep_from` on (the
        oldest seq some reader still has to send)."""
        while self.first_seq < keep_from and (
            len(self) > self.max_events or self.bytes > self.max_bytes
        ):
            self._drop_before(self.first_seq + 1)

    def restart(self, next_seq: int) -> None:
        """Empty the buffer; the next frame appended is `next_seq` (a reader that still
        owes frames before it finds them gone, and is closed to reconnect)."""
        self._blocks.clear()
        self._raw.clear()
        self._cache = None
        self.bytes = 0
        self._blocks_first = self._raw_first = self.first_seq = next_seq

    def get(self, seq: int) -> bytes | None:
        """The frame of `seq`, or None if it was dropped (or is not there yet)."""
        index = seq - self._raw_first
        if index >= 0:
            self._cache = None  # the reader is live again: free the decompressed block
            return self._raw[index] if index < len(self._raw) else None
        if seq < self.first_seq:
            return None
        number, offset = divmod(seq - self._blocks_first, BLOCK)
        start = seq - offset
        cache = self._cache
        if cache is None or cache[0] != start:
            data = zlib.decompressobj(zdict=_DICTIONARY).decompress(self._blocks[number])
            cache = self._cache = (start, data.split(b"\n"))
        return cache[1][offset]

    def trim(self, upto_seq: int) -> None:
        """Drop the frames up to and including `upto_seq` (every reader has them)."""
        if upto_seq >= self.first_seq:
            self._drop_before(min(upto_seq, self.last_seq) + 1)

    def _drop_before(self, seq: int) -> None:
        """Make `seq` the first frame, freeing every block and frame wholly before it."""
        self.first_seq = seq
        blocks = self._blocks
        whole = min(len(blocks), (seq - self._blocks_first) // BLOCK) if blocks else 0
        if whole > 0:
            self.bytes -= sum(map(len, blocks[:whole]))
            del blocks[:whole]
            self._blocks_first += whole * BLOCK
        if not blocks:
            raw = self._raw
            count = min(len(raw), seq - self._raw_first)
            if count > 0:
                self.bytes -= sum(map(len, raw[:count]))
                del raw[:count]
                self._raw_first += count
