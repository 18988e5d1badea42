"""The frames as the filter left them (unit tier): stored only where the filter changed them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.kernel.test_run import Batch

TRAILER = 8


class Outputs:
    """Output frame per input, by send position. Unchanged frames are not copied: most filters
    only judge, and a flood's outputs would otherwise double its memory."""

    def __init__(self, sent: Callable[[int], bytes], changed: np.ndarray, data: np.ndarray,
                 offsets: np.ndarray, sizes: np.ndarray, truncated: np.ndarray) -> None:
        self._sent = sent
        self.changed = changed        # send positions whose output differs from the input (sorted)
        self._data, self._offsets, self._sizes = data, offsets, sizes
        self.truncated = truncated    # send positions whose output outgrew the room kept for it

    @classmethod
    def from_batch(cls, wire: Wire, batch: Batch, start: int) -> Outputs:
        """The outputs of one batch whose first frame was send position ``start``."""
        stride = batch.out.shape[1]
        rows = wire.rows()
        if rows is not None:  # a flood: compare all at once
            length = rows.shape[1] - TRAILER
            same = (batch.size_out == length) & (batch.out[:, :length] == rows[:, :length]).all(axis=1)
        else:
            same = np.array([batch.size_out[i] == wire.lengths[i] - TRAILER
                             and batch.out[i, :batch.size_out[i]].tobytes() == wire.frame(i)[:-TRAILER].tobytes()
                             for i in range(len(wire))], bool)
        idx = np.flatnonzero(~same)
        kept = np.minimum(batch.size_out[idx], stride)
        data = batch.out[idx][np.arange(stride) < kept[:, None]]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(kept, out=offsets[1:])
        def sent(pos: int) -> bytes:
            return wire.frame(pos - start)[:-TRAILER].tobytes()

        return cls(sent, idx + start, data, offsets, kept, np.flatnonzero(batch.size_out > stride) + start)

    @classmethod
    def join(cls, parts: list[Outputs], sent: Callable[[int], bytes]) -> Outputs:
        """One Outputs for consecutive batches; ``sent`` gives an input frame by send position."""
        shifts = np.cumsum([0] + [len(p._data) for p in parts[:-1]])
        return cls(sent, np.concatenate([p.changed for p in parts]),
                   np.concatenate([p._data for p in parts]),
                   np.concatenate([[0]] + [p._offsets[1:] + s for p, s in zip(parts, shifts)]),
                   np.concatenate([p._sizes for p in parts]),
                   np.concatenate([p.truncated for p in parts]))

    def __getitem__(self, pos: int) -> bytes:
        """The output frame of the packet sent at ``pos``."""
        k = int(np.searchsorted(self.changed, pos))
        if k < len(self.changed) and self.changed[k] == pos:
            if pos in self.truncated:
                raise ValueError(f"packet #{pos}: the filter made the frame longer than pktassert kept room for. "
                                 f"Fix: xdp.run(packet) keeps the whole frame.")
            return self._data[self._offsets[k]:self._offsets[k + 1]].tobytes()
        return self._sent(pos)
