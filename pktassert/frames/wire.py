"""Frames as they go to the filter: each followed by the 8-byte trailer (magic, tag), in one buffer.

Both tiers use this: the live path sends slices of the buffer from a socket, the unit path hands
their addresses to BPF_PROG_TEST_RUN. The inspector takes the trailer off before the filter runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Wire:
    data: np.ndarray     # uint8, 1-D, contiguous
    offsets: np.ndarray  # where each frame starts (int64)
    lengths: np.ndarray  # each frame's length, trailer included (int64)
    tags: np.ndarray     # each frame's tag (uint32)

    @classmethod
    def build(cls, frames: list[bytes] | np.ndarray, magic: int, first_tag: int,
              lengths: np.ndarray | None = None) -> Wire:
        """``frames``: a list of frames, or a flood's (n, length) rows (each ``lengths[i]`` long, if given)."""
        n = len(frames)
        tags = (first_tag + np.arange(n, dtype=np.uint64)).astype(np.uint32)
        trailers = np.empty((n, 8), np.uint8)
        trailers[:, :4] = np.frombuffer(magic.to_bytes(4, "big"), np.uint8)
        trailers[:, 4:] = tags.astype(">u4").view(np.uint8).reshape(-1, 4)
        if isinstance(frames, np.ndarray) and lengths is not None:  # rows of different lengths
            width = frames.shape[1] + 8
            rows = np.zeros((n, width), np.uint8)
            rows[:, :frames.shape[1]] = frames
            rows[np.arange(n)[:, None], lengths[:, None] + np.arange(8)] = trailers
            sizes = lengths.astype(np.int64) + 8
            return cls(rows[np.arange(width) < sizes[:, None]], _starts(sizes), sizes, tags)
        if isinstance(frames, np.ndarray):
            rows = np.hstack([frames, trailers])
            stride = rows.shape[1]
            return cls(rows.reshape(-1), np.arange(n, dtype=np.int64) * stride,
                       np.full(n, stride, np.int64), tags)
        sizes = np.fromiter((len(f) + 8 for f in frames), np.int64, n)
        data = np.frombuffer(b"".join(f + t.tobytes() for f, t in zip(frames, trailers)), np.uint8)
        return cls(data, _starts(sizes), sizes, tags)

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self) -> np.ndarray | None:
        """The frames as (n, length) rows when they all have one length (a flood), else None."""
        n = len(self)
        if n and (self.lengths == self.lengths[0]).all() and len(self.data) == n * int(self.lengths[0]):
            return self.data.reshape(n, -1)
        return None

    def frame(self, i: int) -> memoryview:
        start = int(self.offsets[i])
        return self.data.data[start:start + int(self.lengths[i])]


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Where each of back-to-back frames of these sizes starts."""
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    return starts

def sampled(start: int, stop: int, step: int) -> tuple[slice, slice]:
    """A chunk's part of a sample of every ``step``-th packet: (where in the kept array, which of the
    chunk's own rows) for the chunk of send positions ``start``..``stop``."""
    return slice(-(-start // step), -(-stop // step)), slice(-start % step, None, step)
