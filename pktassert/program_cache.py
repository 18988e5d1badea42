"""Loaded programs by source for the session: bcc has no compile cache and takes seconds, but each
loaded program holds ~20 MiB of kernel memory and several fds, so only the most recent are kept."""

from __future__ import annotations

import collections
import resource
from typing import Any

from pktassert.bpf.loaded import Loaded
from pktassert.collect import Collector
from pktassert.errors import ProgramError

KEEP = 8  # loaded programs kept at once; a suite's tests of one filter usually run together


def raise_fd_limit() -> None:
    """Up to the hard limit: bcc, libbpf and our maps take fds per program."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ProgramCache:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._loaded: collections.OrderedDict[tuple, tuple[Loaded, Collector]] = collections.OrderedDict()
        self._failed: dict[tuple, ProgramError] = {}  # the user's errors (compiler, verifier): as cheap to keep as to show

    def get(self, program: Any) -> tuple[Loaded, Collector]:
        """``program``: a BccSource, LibbpfSource or ObjectFile (pktassert.subjects)."""
        key = program.cache_key()
        if key in self._failed:
            raise self._failed[key]
        hit = self._loaded.pop(key, None)
        if hit is not None and not hit[0].resettable:
            _close(hit)  # a map that cannot be emptied (bloom filter): fresh state means a fresh load
            hit = None
        if hit is None:
            try:
                loaded = program.load()
            except ProgramError as e:
                if program.kind not in str(e):  # which kind of filter it was taken for
                    e = ProgramError(f"({program.kind}) {e}")
                self._failed[key] = e
                raise e from None
            hit = (loaded, Collector(loaded))
        self._loaded[key] = hit
        while len(self._loaded) > self.keep:
            _close(self._loaded.popitem(last=False)[1])
        return hit

    def close(self) -> None:
        for hit in self._loaded.values():
            _close(hit)
        self._loaded.clear()


def _close(hit: tuple[Loaded, Collector]) -> None:
    hit[1].close()  # the ring buffer reader first: it maps the loaded program's ring
    hit[0].close()
