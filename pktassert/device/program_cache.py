"""Loaded programs by source for the session: bcc has no compile cache and takes seconds, but each
loaded program holds ~20 MiB of kernel memory and several fds, so only the most recent are kept."""

from __future__ import annotations

import collections
import os
import resource
from collections.abc import Callable
from typing import Any

from pktassert.errors import ProgramError
from pktassert.observers.collect import Collector
from pktassert.programs.loaded import Loaded

KEEP = 8  # loaded programs kept at once; a suite's tests of one filter usually run together
FD_SHARE = 0.5  # of the fd limit: above it, programs are closed before another loads (a runner's low `ulimit -n`)


FDS_WANTED = 4096


def raise_fd_limit() -> tuple[int, int]:
    """The soft limit up to 4,096 where the hard limit allows (bcc, libbpf and our maps take fds per
    program); not to the hard limit, which on container runners is a million or more and would be
    inherited by every process a test starts. Returns the limits before, to restore."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    wanted = FDS_WANTED if hard == resource.RLIM_INFINITY else min(FDS_WANTED, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return before


class ProgramCache:
    def __init__(self, keep: int = KEEP, on_close: Callable[[int], None] | None = None) -> None:
        self.keep = keep
        self._on_close = on_close  # told each program's fd before it closes (pktassert/kernel/xdp_anchor.py)
        self._loaded: collections.OrderedDict[tuple, tuple[Loaded, Collector]] = collections.OrderedDict()
        self._failed: dict[tuple, ProgramError] = {}  # the user's errors (compiler, verifier): as cheap to keep as to show
        self._in_use: collections.Counter[tuple] = collections.Counter()  # handed out and not released: never closed

    def get(self, program: Any) -> tuple[Loaded, Collector]:
        """``program``: a BccSource, LibbpfSource or ObjectFile (pktassert.programs.subjects)."""
        key = program.cache_key()
        if key in self._failed:
            raise self._failed[key]
        hit = self._loaded.pop(key, None)
        if hit is not None and not hit[0].resettable and not self._in_use[key]:
            self._close(hit)  # a map that cannot be emptied (bloom filter): fresh state means a fresh load
            hit = None
        if hit is None:
            self._make_room()
            try:
                loaded = program.load()
            except ProgramError as e:
                if program.kind not in str(e):  # which kind of filter it was taken for
                    e = ProgramError(f"({program.kind}) {e}")
                self._failed[key] = e
                raise e from None
            hit = (loaded, Collector(loaded))
        self._loaded[key] = hit
        self._in_use[key] += 1
        while len(self._loaded) > self.keep and self._close_oldest():
            pass
        return hit

    def release(self, program: Any) -> None:
        """The test that got ``program`` is done with it: it may be closed to make room."""
        self._in_use[program.cache_key()] -= 1

    def _close_oldest(self) -> bool:
        """Close the least recently used program no test is using; False if there is none."""
        idle = next((k for k in self._loaded if not self._in_use[k]), None)
        if idle is None:
            return False
        self._close(self._loaded.pop(idle))
        return True

    def _make_room(self) -> None:
        """Close idle programs while this process holds more than its share of fds."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        while len(os.listdir("/proc/self/fd")) > limit * FD_SHARE and self._close_oldest():
            pass

    def close(self) -> None:
        for hit in self._loaded.values():
            self._close(hit)
        self._loaded.clear()

    def _close(self, hit: tuple[Loaded, Collector]) -> None:
        if self._on_close is not None:
            self._on_close(hit[0].fd)
        hit[1].close()  # the ring buffer reader first: it maps the loaded program's ring
        hit[0].close()
