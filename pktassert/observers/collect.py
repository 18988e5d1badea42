"""Read what the inspector emitted: records from the ring buffer, exact counts from the counter map."""

from __future__ import annotations

import ctypes
import dataclasses
import time
from typing import Any

import numpy as np

from pktassert.hooks.verdict import Verdict
from pktassert.instruments.record import const, dtype_of
from pktassert.kernel import libbpf
from pktassert.programs.loaded import Loaded

GRACE_S = 0.05  # every frame has entered the filter: how long to wait for the last ones to finish


@dataclasses.dataclass
class Tally:
    """Counter values (summed over CPUs) at one moment, or the difference of two."""

    counters: np.ndarray  # one per counter slot of record.h
    actions: Any = Verdict  # the hook's action enum (Verdict, TcVerdict)

    def _group(self, first: int) -> np.ndarray:
        return self.counters[first:first + const("CTR_GROUP")]

    @property
    def injected(self) -> dict[Any, int]:
        """Frames pktassert sent, by the action the kernel took."""
        return self.actions.fold(self._group(const("CTR_TAGGED")))

    @property
    def stray(self) -> dict[Any, int]:
        """Frames pktassert did not send (the stacks' own traffic), by action."""
        return self.actions.fold(self._group(const("CTR_STRAY")))

    @property
    def completed(self) -> int:
        """Injected frames the filter returned a verdict for."""
        return int(self._group(const("CTR_TAGGED")).sum())

    @property
    def entered(self) -> int:
        """Injected frames handed to the filter (more than completed: some left by a tail call)."""
        return int(self.counters[const("CTR_ENTERED")])

    @property
    def frames(self) -> int:
        """Every frame the filter judged, injected or not."""
        return self.completed + self.stray_total

    @property
    def stray_total(self) -> int:
        return int(self._group(const("CTR_STRAY")).sum())

    @property
    def lost(self) -> int:
        return int(self.counters[const("CTR_LOST")])

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.counters - other.counters, self.actions)


def settled(delta: Tally, expected: int, still_for: float, quiet_s: float) -> bool:
    """Whether waiting for ``expected`` injected frames is over: all have a verdict, or all entered
    the filter and the rest stopped (left through a tail call), or nothing moved for ``quiet_s``."""
    if delta.completed >= expected:
        return True
    if delta.entered >= expected and still_for > GRACE_S:
        return True
    return still_for > quiet_s


@dataclasses.dataclass
class Collected:
    """Records for one range of tags, in tag (= send) order, and how they were accounted for."""

    records: np.ndarray   # one per tag; rows with have[i] False are zero
    have: np.ndarray      # bool per tag
    delta: Tally          # what the counters counted meanwhile
    undelivered: np.ndarray  # bool per tag: the veth refused the frame (ENOBUFS), the filter never ran


class Collector:
    """Counters of one loaded program, and its ring buffer drained into numpy records."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.dtype = dtype_of(loaded.record_type)
        self._size = self.dtype.itemsize
        self._buf = np.zeros(1 << 12, self.dtype)
        self._n = 0
        # Over the maps' fds with libbpf, whichever loader made them.
        self._counters_fd = loaded.our_map_fd("pktassert_counters")
        self._cpus = libbpf.possible_cpus()
        # All counters in one syscall (a flood reads them a few times a chunk; each call into C lets
        # the frame-building thread take the GIL).
        self._keys = np.zeros(const("CTR_SLOTS"), np.uint32)
        self._values = np.zeros((const("CTR_SLOTS"), self._cpus), np.uint64)
        self._batch = ctypes.c_uint32()
        self._count = ctypes.c_uint32()
        self._callback = libbpf.RINGBUF_SAMPLE_FN(self._on_record)  # kept alive as long as the ring
        self._ring = libbpf.lib().ring_buffer__new(loaded.our_map_fd("pktassert_events"), self._callback, None, None)
        if not self._ring:
            raise OSError(libbpf.error_of(self._ring), "ring_buffer__new on pktassert_events")

    def _on_record(self, _ctx: object, data: int, size: int) -> int:
        if self._n == len(self._buf):
            self._buf = np.resize(self._buf, 2 * len(self._buf))
        ctypes.memmove(self._buf.ctypes.data + self._n * self._size, data, self._size)
        self._n += 1
        return 0

    def tally(self) -> Tally:
        self._count.value = len(self._keys)
        rc = libbpf.lib().bpf_map_lookup_batch(self._counters_fd, None, ctypes.byref(self._batch),
                                               self._keys.ctypes.data, self._values.ctypes.data,
                                               ctypes.byref(self._count), None)
        # -ENOENT: the whole array came back and there is nothing after it
        if rc not in (0, -2) or self._count.value != len(self._keys):
            raise OSError(-rc, f"reading pktassert_counters: {self._count.value} of {len(self._keys)} counters")
        return Tally(self._values.sum(axis=1).astype(np.int64), self.loaded.actions)

    def await_counts(self, before: Tally, expected: int, quiet_s: float = 1.0) -> Tally:
        """Wait until the counters since ``before`` show ``expected`` more injected frames judged (or
        all entered and the rest left through a tail call), or stop moving for ``quiet_s``; the
        counters' difference. The NAPI that runs the filter may still be working when a send returns."""
        state, moved = None, time.monotonic()
        while True:
            delta = self.tally() - before
            now = (delta.entered, delta.completed)
            if now != state:
                state, moved = now, time.monotonic()
            if settled(delta, expected, time.monotonic() - moved, quiet_s):
                return delta
            time.sleep(0.0005)  # the counters are a map: nothing to block on; a short, bounded poll

    def discard(self) -> None:
        """Drop whatever is in the ring (used between tests)."""
        libbpf.lib().ring_buffer__consume(self._ring)
        self._n = 0

    def poll(self, timeout_ms: int) -> None:
        """Take what the ring holds into our buffer (collect() sorts it out later)."""
        libbpf.lib().ring_buffer__poll(self._ring, timeout_ms)

    def close(self) -> None:
        if self._ring:
            libbpf.lib().ring_buffer__free(self._ring)
            self._ring = None

    def collect(self, first_tag: int, out: np.ndarray, before: Tally, undelivered: np.ndarray | None = None,
                quiet_s: float = 1.0) -> Collected:
        """Wait until every delivered tag in [first_tag, first_tag+len(out)) has its record in
        ``out``, or the counters show it never will, or nothing moves for ``quiet_s``."""
        count = len(out)
        out[:] = 0
        have = np.zeros(count, bool)
        skip = np.zeros(count, bool) if undelivered is None else undelivered
        delivered = count - int(skip.sum())
        state, moved = None, time.monotonic()
        while True:
            self.poll(50)  # epoll: returns as soon as records arrive
            if self._n:
                recs = self._buf[: self._n]
                idx = recs["tag"].astype(np.int64) - first_tag
                mine = (idx >= 0) & (idx < count)
                out[idx[mine]] = recs[mine]
                have[idx[mine]] = True
                self._n = 0
            delta = self.tally() - before
            if (have | skip).all():
                break
            now = (int(have.sum()), delta.entered, delta.completed, delta.lost)
            if now != state:
                state, moved = now, time.monotonic()
            recorded = int(have.sum()) + delta.lost >= delta.completed  # the ring has handed over what it got
            if recorded and settled(delta, delivered, time.monotonic() - moved, quiet_s):
                break
            if time.monotonic() - moved > quiet_s:
                break
        return Collected(out, have, delta, skip)
