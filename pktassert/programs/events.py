"""A filter's own event output, read from a test: its ring buffer or perf event array, by map name.

``xdp.events("events").read()`` gives the records the filter emitted since the last read, as bytes,
or as a ctypes type you name (``read(MyEvent)``) with its fields. libbpf's ring_buffer and
perf_buffer readers do the reading.

A perf event array keeps nothing for a reader that is not there yet: bpf_perf_event_output() finds
no perf event in the CPU's slot and the record is gone. So the readers must be open before the
test's first packet: ``open_readers()`` opens one for each such map of the filter, at fixture setup,
after the per-test reset (a ring buffer keeps its records until read, but is opened there too).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from pktassert.errors import PktassertError
from pktassert.kernel import libbpf, map_reset

RINGBUF, PERF_EVENT_ARRAY = map_reset.MapType.RINGBUF, map_reset.MapType.PERF_EVENT_ARRAY


def open_readers(fds: Mapping[str, int]) -> dict[str, Events]:
    """A reader for each ring buffer and perf event array among the filter's maps (name -> fd), open
    from now on: every record written after this is there for the first read(). A map whose reader
    cannot be opened is left out: asking for it later opens it again, and says why it can't."""
    readers = {}
    for name, fd in fds.items():
        if map_reset.info(fd).type in (RINGBUF, PERF_EVENT_ARRAY):
            try:
                readers[name] = Events(name, fd)
            except PktassertError:
                continue
    return readers


class Events:
    def __init__(self, name: str, fd: int) -> None:
        kind = map_reset.info(fd).type
        self.name, self._got = name, []  # type: ignore[var-annotated]
        lib = libbpf.lib()
        if kind == RINGBUF:
            self._cb = libbpf.RINGBUF_SAMPLE_FN(self._ring_sample)
            self._reader = lib.ring_buffer__new(fd, self._cb, None, None)
            self._consume, self._free = lib.ring_buffer__consume, lib.ring_buffer__free
        elif kind == PERF_EVENT_ARRAY:
            self._cb = libbpf.PERF_SAMPLE_FN(self._perf_sample)
            self._lost_cb = libbpf.PERF_LOST_FN(self._perf_lost)
            self._reader = lib.perf_buffer__new(fd, 64, self._cb, self._lost_cb, None, None)
            self._consume, self._free = lib.perf_buffer__consume, lib.perf_buffer__free
        else:
            raise PktassertError(f"map {name!r} is a {map_reset.info(fd).type_name}, not a ring buffer or perf event "
                                 f"array. Fix: read it with xdp.map({name!r}).")
        if not self._reader:
            raise PktassertError(f"cannot read events from {name!r}: error {libbpf.error_of(self._reader)}")
        self.lost = 0

    def _ring_sample(self, _ctx: Any, data: int, size: int) -> int:
        self._got.append(ctypes.string_at(data, size))
        return 0

    def _perf_sample(self, _ctx: Any, _cpu: int, data: int, size: int) -> None:
        self._got.append(ctypes.string_at(data, size))

    def _perf_lost(self, _ctx: Any, _cpu: int, count: int) -> None:
        self.lost += count

    def read(self, as_type: Any = None) -> list[Any]:
        """Every record emitted since the last read, oldest first: bytes, or ``as_type`` (a ctypes
        Structure) made from each record's first bytes."""
        self._consume(self._reader)
        got, self._got = self._got, []
        if as_type is None:
            return got
        size = ctypes.sizeof(as_type)
        short = [len(g) for g in got if len(g) < size]
        if short:
            raise PktassertError(f"{self.name}: a record of {short[0]} bytes is shorter than {as_type.__name__} "
                                 f"({size} bytes).")
        return [as_type.from_buffer_copy(g[:size]) for g in got]

    def close(self) -> None:
        if self._reader:
            self._free(self._reader)
            self._reader = None
