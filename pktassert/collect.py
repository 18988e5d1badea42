"""Read what the inspector emitted: records from the ring buffer, exact counts from the counter map."""

from __future__ import annotations

import ctypes
import dataclasses
import time

import numpy as np

from pktassert.bpf.program import LoadedProgram
from pktassert.record import const, dtype_of


@dataclasses.dataclass
class Tally:
    """Counter values (summed over CPUs) at one moment."""

    verdicts: np.ndarray  # frames per slot 0..PA_CTR_SLOTS-1
    @property
    def frames(self) -> int:
        return int(self.verdicts[: const("PA_CTR_INVALID") + 1].sum())
    @property
    def untagged(self) -> int:
        return int(self.verdicts[const("PA_CTR_UNTAGGED")])
    @property
    def lost(self) -> int:
        return int(self.verdicts[const("PA_CTR_LOST")])
    @property
    def tagged(self) -> int:
        return self.frames - self.untagged


@dataclasses.dataclass
class Collected:
    """Records for one range of tags, in tag (= send) order, and how they were accounted for."""

    records: np.ndarray   # one per tag; rows with have[i] False are zero
    have: np.ndarray      # bool per tag
    seen: int             # tagged frames the inspector counted (exact, from the counters)
    lost: int             # records the ring buffer had no room for
    undelivered: np.ndarray  # bool per tag: the veth refused the frame (ENOBUFS), the filter never ran
    stray: int            # untagged frames seen meanwhile


class Collector:
    """Drains the inspector's ring buffer into numpy records; one per loaded program."""

    def __init__(self, loaded: LoadedProgram) -> None:
        self.loaded = loaded
        self.dtype = dtype_of(loaded.record_type)
        self._size = self.dtype.itemsize
        self._buf = np.zeros(1 << 12, self.dtype)
        self._n = 0
        self._counters = loaded.bpf[b"pa_counters"]
        self._tag_at = self.dtype.fields["tag"][1]
        loaded.bpf[b"pa_events"].open_ring_buffer(self._on_record)

    def _on_record(self, _ctx: object, data: int, size: int) -> int:
        if self._n == len(self._buf):
            self._buf = np.resize(self._buf, 2 * len(self._buf))
        ctypes.memmove(self._buf.ctypes.data + self._n * self._size, data, self._size)
        self._n += 1
        return 0

    def tally(self) -> Tally:
        slots = [sum(self._counters[ctypes.c_int(i)]) for i in range(const("PA_CTR_SLOTS"))]
        return Tally(np.array(slots, dtype=np.int64))

    def discard(self) -> None:
        """Drop whatever is in the ring (used between tests)."""
        self.loaded.bpf.ring_buffer_consume()
        self._n = 0

    def poll(self, timeout_ms: int) -> None:
        """Take what the ring holds into our buffer (collect() sorts it out later)."""
        self.loaded.bpf.ring_buffer_poll(timeout_ms)

    def collect(self, first_tag: int, out: np.ndarray, before: Tally, undelivered: np.ndarray | None = None,
                quiet_s: float = 1.0) -> Collected:
        """Wait until every delivered tag in [first_tag, first_tag+len(out)) has its record in
        ``out``, or the counters show it never will (lost in the ring), or nothing new arrives
        for ``quiet_s``."""
        bpf = self.loaded.bpf
        count = len(out)
        out[:] = 0
        have = np.zeros(count, bool)
        skip = np.zeros(count, bool) if undelivered is None else undelivered
        delivered = count - int(skip.sum())
        stray = 0
        last_progress = time.monotonic()
        while True:
            bpf.ring_buffer_poll(50)  # epoll: returns as soon as records arrive
            if self._n:
                recs = self._buf[: self._n]
                idx = recs["tag"].astype(np.int64) - first_tag
                mine = (idx >= 0) & (idx < count)
                stray += int((recs["tag"] == const("PA_UNTAGGED")).sum())
                out[idx[mine]] = recs[mine]
                have[idx[mine]] = True
                self._n = 0
                last_progress = time.monotonic()
            now = self.tally()
            seen, lost = now.tagged - before.tagged, now.lost - before.lost
            got = int(have.sum())
            if (have | skip).all() or (seen >= delivered and got + lost >= delivered):
                break
            if time.monotonic() - last_progress > quiet_s:
                break
        return Collected(out, have, seen, lost, skip, stray)
