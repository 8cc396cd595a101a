"""A session's recent events, each encoded once, bounded in count and in bytes.

It is both the replay buffer and the outbound queue: every attached connection sends from
it at its own cursor, so a slow or reconnecting client costs no copy of the frames, a
replay is just a cursor set back, and live events follow replayed ones in `seq` order by
construction.
"""

from __future__ import annotations

from collections import deque


class ReplayBuffer:
    """Frames with consecutive seqs: `first_seq` .. `last_seq`. The oldest are dropped past
    `max_events` or `max_bytes`, but never one that an attached reader has yet to send
    (readers that lag make their producer wait, so that overshoot stays small), or once
    every reader has acknowledged them (`trim`)."""

    __slots__ = ("_frames", "bytes", "first_seq", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self._frames: deque[bytes] = deque()
        self.first_seq = 1
        self.bytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def last_seq(self) -> int:
        """The seq of the newest frame (first_seq - 1 when empty)."""
        return self.first_seq + len(self._frames) - 1

    def append(self, frame: bytes) -> bool:
        """Add the frame of seq `last_seq + 1`; True if the buffer is now past its bounds
        and should `evict`."""
        self._frames.append(frame)
        self.bytes += len(frame)
        return len(self._frames) > self.max_events or self.bytes > self.max_bytes

    def evict(self, keep_from: int) -> None:
        """Drop the oldest frames while past the bounds, but none from `keep_from` on (the
        oldest seq some reader still has to send)."""
        frames = self._frames
        while self.first_seq < keep_from and (
            len(frames) > self.max_events or self.bytes > self.max_bytes
        ):
            self.bytes -= len(frames.popleft())
            self.first_seq += 1

    def get(self, seq: int) -> bytes | None:
        """The frame of `seq`, or None if it was dropped (or is not there yet)."""
        index = seq - self.first_seq
        if 0 <= index < len(self._frames):
            return self._frames[index]
        return None

    def trim(self, upto_seq: int) -> None:
        """Drop the frames up to and including `upto_seq` (every reader has them)."""
        frames = self._frames
        while frames and self.first_seq <= upto_seq:
            self.bytes -= len(frames.popleft())
            self.first_seq += 1
