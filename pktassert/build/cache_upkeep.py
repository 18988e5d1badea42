"""Keeping the build cache small and clean: what dead writers left goes, and the least recently
used entries go when the cache outgrows its bound (``$PKTASSERT_CACHE_MAX_MB``, 1 GiB by default).

Run once per run (the controller, at its start and end) and by ``pktassert-cleanup``. Never takes
anything a live process may be using: temporaries of live writers, entries whose lock is held or
that were used in the last hour, private caches whose writers live.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from pktassert.build import build_cache, cache_dir


def leftovers(root: Path | None = None) -> list[Path]:
    """Remove what killed runs left: temporaries in the cache, private caches in the temporary folder."""
    gone: list[Path] = []
    root = root or build_cache.directory()
    if root.is_dir() and not cache_dir.why_untrusted(root):
        gone += cache_dir.sweep(Path(os.path.realpath(root)))
    for folder in Path(tempfile.gettempdir()).glob(build_cache.PRIVATE + "*"):
        with contextlib.suppress(OSError):
            st = os.lstat(folder)
            if st.st_uid == os.geteuid() and folder.is_dir() and not folder.is_symlink() \
                    and not cache_dir.in_use(folder):
                shutil.rmtree(folder)
                gone.append(folder)
    return gone


def limit() -> int:
    """The cache's bound in bytes."""
    try:
        return int(float(os.environ.get(build_cache.MAX_ENV, build_cache.MAX_MB)) * 2**20)
    except ValueError:
        return build_cache.MAX_MB * 2**20


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def _entries(root: Path) -> list[Path]:
    """What eviction may take: an entry folder per key, a source, a compile record; and anything not
    of this layout (an older format's files)."""
    out: list[Path] = []
    for child in root.iterdir():
        if child.name not in build_cache.LAYOUT:
            out.append(child)
        elif child.name in (*build_cache.KINDS, "sources", "compiles-v1") and child.is_dir():
            out += [p for p in child.iterdir() if not p.name.startswith(cache_dir.TEMP)]
    return out


def _busy(entry: Path) -> bool:
    """Whether a writer holds the entry's lock now."""
    return entry.is_dir() and not entry.is_symlink() and cache_dir.held(entry / "lock")


def evict(root: Path | None = None, bound: int | None = None, keep_recent: float = build_cache.KEEP_RECENT,
          ) -> list[Path]:
    """Remove the least recently used entries until the cache is within 90% of its bound; what went."""
    root = root or build_cache.root()
    bound = limit() if bound is None else bound
    sized = [(e.lstat().st_mtime, _size(e), e) for e in _entries(root)]
    total = sum(s for _, s, _ in sized) + sum(_size(root / n) for n in (build_cache.COMPILES_LOG,)
                                               if (root / n).exists())
    if total <= bound:
        return []
    gone: list[Path] = []
    now = time.time()
    for used, size, entry in sorted(sized, key=lambda t: t[0]):
        if total <= bound * 0.9:
            break
        if now - used < keep_recent or _busy(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        total -= size
        gone.append(entry)
    return gone
