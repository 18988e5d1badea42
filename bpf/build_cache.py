"""Build products of libbpf filters kept on disk: compiled objects and objects linked with our inspector.

Shared by runs and by xdist workers on one machine. An entry is keyed by everything that
determines it: for a compile, the source, every file it included (clang's dependency list, checked
by content on each lookup, as ccache's direct mode does), the flags, clang's version, the kernel's
BTF (vmlinux.h) and libbpf's version. Writers take a lock per key and rename finished files into
place, so concurrent workers compile a filter once and never read half a file. bcc sources are not
here: bcc compiles and loads in one step and has no object to keep.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ENV = "PKTASSERT_CACHE_DIR"
FORMAT = "1"  # bump when what an entry holds changes
COMPILES_LOG = "compiles.log"


def directory() -> Path:
    """$PKTASSERT_CACHE_DIR (``--pktassert-cache-dir``), else $XDG_CACHE_HOME/pktassert/build."""
    chosen = os.environ.get(ENV)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pktassert" / "build"


def unwritable(where: Path) -> str | None:
    """Why the cache cannot live at ``where`` (a read-only home, say), or None; creates nothing."""
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only file system, even for root
        return None
    return f"{where}: {os.strerror(errno.EROFS) if _read_only(existing) else 'not writable'}"


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def clear(where: Path | None = None) -> int:
    """Remove every entry; returns how many files went."""
    where = where or directory()
    if not where.is_dir():
        return 0
    n = sum(1 for p in where.rglob("*") if p.is_file())
    shutil.rmtree(where)
    return n


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()[:32]


@functools.cache
def clang_version(clang: str) -> str:
    return subprocess.run([clang, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


@functools.cache
def kernel_btf_id() -> str:
    """What vmlinux.h is made from: the running kernel's BTF."""
    from pktassert import host

    host.check("kernel BTF")
    return digest(Path(host.BTF).read_bytes())


_digests: dict[str, tuple[tuple[int, int, int], str]] = {}


def _file_digest(path: str) -> str | None:
    """The file's content digest, read again only when its inode, size or mtime changed: every
    test's lookup checks every include (vmlinux.h is 3 MB)."""
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = _digests.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = digest(Path(path).read_bytes())
    except OSError:
        return None
    _digests[path] = (stamp, value)
    return value


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when closed, also if we die
        yield


def _place(data_path: Path, target: Path) -> None:
    os.replace(data_path, target)  # atomic on one filesystem: readers see all or nothing


def _log_compile(where: Path, what: str, seconds: float) -> None:
    with open(where / COMPILES_LOG, "a") as f:  # one short line per write: appends do not interleave
        f.write(json.dumps({"what": what, "pid": os.getpid(), "s": round(seconds, 3)}) + "\n")


def compiles(where: Path | None = None) -> list[dict]:
    """Every compile this cache directory has seen (for benchmarks and tests)."""
    log = (where or directory()) / COMPILES_LOG
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def compiled(source: Path, key: str, run: Callable[[Path, Path], None]) -> tuple[Path, bool]:
    """The object for ``source`` under ``key`` (its flags and tools), compiled by ``run(out, depfile)``
    if no entry matches. Returns the object's path and whether it came from the cache."""
    where = directory() / "objects"
    manifest = where / f"{key}.deps.json"
    hit = _lookup(manifest, where, key)
    if hit is not None:
        return hit, True
    with _locked(where / f"{key}.lock"):
        hit = _lookup(manifest, where, key)  # another worker may have built it while we waited
        if hit is not None:
            return hit, True
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            out, deps = Path(tmp) / "out.o", Path(tmp) / "out.d"
            t0 = time.perf_counter()
            run(out, deps)
            files = _dependencies(deps.read_text()) if deps.exists() else [str(source)]
            sums = {f: _file_digest(f) for f in files}
            target = where / f"{key}-{digest(json.dumps(sums, sort_keys=True))}.o"
            _place(out, target)
            tmp_manifest = Path(tmp) / "manifest"
            tmp_manifest.write_text(json.dumps(sums))
            _place(tmp_manifest, manifest)
            _log_compile(directory(), f"compile {source.name}", time.perf_counter() - t0)
        return target, False


def _lookup(manifest: Path, where: Path, key: str) -> Path | None:
    try:
        sums = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if any(_file_digest(f) != d for f, d in sums.items()):
        return None
    target = where / f"{key}-{digest(json.dumps(sums, sort_keys=True))}.o"
    return target if target.exists() else None


def _dependencies(make_rule: str) -> list[str]:
    """The files of a clang -MD rule ("out.o: a.c b.h \\\\\\n c.h")."""
    body = make_rule.split(":", 1)[1].replace("\\\n", " ")
    return [os.path.abspath(p.replace("\\ ", " ")) for p in body.split() if p != "\\"]


def product(key: str, name: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
    """A build product that depends only on ``key`` (e.g. a linked object from known inputs)."""
    where = directory() / "linked"
    target = where / f"{key}-{name}"
    if target.exists():
        return target, True
    with _locked(where / f"{key}.lock"):
        if target.exists():
            return target, True
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            out = Path(tmp) / name
            t0 = time.perf_counter()
            make(out)
            _place(out, target)
            _log_compile(directory(), f"link {name}", time.perf_counter() - t0)
    return target, False
