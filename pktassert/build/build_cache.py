"""Build products of libbpf filters kept on disk: compiled objects and objects linked with our inspector.

Shared by runs and by xdist workers on one machine. An entry is keyed by everything that
determines it: for a compile, the source, every file it included (clang's dependency list, checked
by content on each lookup, as ccache's direct mode does), the flags, clang's version, the kernel's
BTF (vmlinux.h) and libbpf's version. Each entry is a folder (``<kind>/<key>/``) with its product,
the product's size and digest (checked before use: a damaged entry is rebuilt, never loaded) and a
lock: writers take it and rename finished files into place, so concurrent workers build a product
once and never read half a file. The folder is one root can rely on (pktassert/build/cache_dir.py); where it
cannot be written (read-only, full), the process builds in a private temporary one and says so.
bcc sources are not here: bcc compiles and loads in one step and has no object to keep.
"""

from __future__ import annotations

import atexit
import errno
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pktassert.build import cache_dir
from pktassert.build.cache_dir import CacheRefused
from pktassert.machine import host, reaper

ENV = "PKTASSERT_CACHE_DIR"
MAX_ENV = "PKTASSERT_CACHE_MAX_MB"
MAX_MB = 1024           # the cache's size bound (least recently used entries go first)
KEEP_RECENT = 3600      # seconds: an entry used this recently is never evicted (another run may be reading it)
FORMAT = "2"            # bump when what an entry holds changes
COMPILES_LOG = "compiles.log"
LOG_LIMIT = 256 * 1024  # the log is rotated (one old part kept) past this size
KINDS = ("objects", "linked", "headers")  # folders of entries, one folder per key
LAYOUT = {*KINDS, "sources", "compiles-v1", COMPILES_LOG, COMPILES_LOG + ".1", cache_dir.WRITERS}
PRIVATE = "pktassert-cache-"  # the prefix of private caches in the temporary folder
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

__all__ = ["CacheRefused"]


class CacheWarning(UserWarning):
    """The build cache could not be used as chosen; the run goes on with a private one."""


def directory() -> Path:
    """$PKTASSERT_CACHE_DIR (``--pktassert-cache-dir``), else $XDG_CACHE_HOME/pktassert/build."""
    chosen = os.environ.get(ENV)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pktassert" / "build"


def problem(where: Path) -> tuple[str, bool] | None:
    """Why the cache cannot be at ``where`` and whether that is distrust (else: not writable), or None.
    Makes the folder (0700) when it can."""
    try:
        cache_dir.ensure(where)
    except CacheRefused as e:
        return str(e), True
    except OSError as e:
        return f"{where}: {e.strerror}", False
    why = unwritable(where)
    return (why, False) if why else None


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


_roots: dict[Path, Path] = {}
_private: dict[int, Path] = {}  # pid -> the private cache this process moved to


def root() -> Path:
    """The cache folder, checked (its real path); this process's private one after a fallback."""
    private = _private.get(os.getpid())
    if private is not None:
        return private
    chosen = directory()
    if chosen in _roots and not os.path.isdir(_roots[chosen]):  # emptied (pktassert-cleanup --cache): again
        del _roots[chosen]
    if chosen not in _roots:
        try:
            _roots[chosen] = cache_dir.ensure(chosen)
        except CacheRefused as e:
            raise CacheRefused(cache_dir.refusal(chosen, str(e), f"--pktassert-cache-dir (or ${ENV})")) from None
        except OSError as e:
            return use_private(f"{chosen}: {e.strerror}")
    return _roots[chosen]


def private_folder() -> Path:
    """A fresh private cache (0700) in the temporary folder, marked live while this process lives."""
    folder = Path(tempfile.mkdtemp(prefix=PRIVATE))
    reaper.register(folder)  # gone with this process however it ends (atexit does not run on SIGKILL)
    cache_dir.own(folder)
    return folder


def use_private(why: str) -> Path:
    """Go on in a private cache of this process (removed at its end), saying why."""
    folder = private_folder()
    _private[os.getpid()] = folder
    atexit.register(shutil.rmtree, folder, True)
    warnings.warn(CacheWarning(f"pktassert: the build cache cannot be written ({why}); this process builds in "
                               f"a private temporary cache {folder}, removed when it ends, so nothing is kept "
                               f"for later runs. Fix: free space, or --pktassert-cache-dir (${ENV}) on a "
                               f"writable disk of your own."), stacklevel=3)
    return folder


T = TypeVar("T")


def _building(build: Callable[[Path], T]) -> T:
    """``build(root)``, again in a private cache if the cache cannot be written (read-only, full)."""
    r = root()
    try:
        return build(r)
    except OSError as e:
        if e.errno not in _CANNOT_WRITE or _private.get(os.getpid()) == r:
            raise
        return build(use_private(f"{r}: {e.strerror}"))


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


def _intact(folder: Path, name: str, size: int, sha: str) -> bool:
    """Whether ``folder/name`` is ours, whole and what was built (read again only when it changed)."""
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        return False
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if _verified.get(path) == (stamp, sha):
        return True
    data = cache_dir.read(folder, name)
    if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        return False
    _verified[path] = (stamp, sha)
    return True


_verified: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
_used: set[Path] = set()


def _used_now(folder: Path) -> None:
    """The entry's last use (its folder's mtime), for eviction; once per process."""
    if folder not in _used:
        _used.add(folder)
        os.utime(folder)


def _describe(data: bytes, **more: object) -> bytes:
    return json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **more}).encode()


def _record(folder: Path, name: str) -> dict | None:
    try:
        return dict(json.loads(cache_dir.read(folder, name) or b""))
    except (ValueError, TypeError):
        return None


def _log_compile(where: Path, what: str, seconds: float) -> None:
    line = json.dumps({"what": what, "pid": os.getpid(), "s": round(seconds, 3)}) + "\n"
    try:
        if os.lstat(where / COMPILES_LOG).st_size > LOG_LIMIT:
            with cache_dir.opened(where) as dfd:
                os.replace(COMPILES_LOG, COMPILES_LOG + ".1", src_dir_fd=dfd, dst_dir_fd=dfd)
    except FileNotFoundError:
        pass
    cache_dir.append(where, COMPILES_LOG, line)  # one short line per write: appends do not interleave


def compiles(where: Path | None = None) -> list[dict]:
    """Every compile this cache directory has seen (for benchmarks and tests)."""
    where = where or directory()
    lines = [ln for name in (COMPILES_LOG + ".1", COMPILES_LOG) if (where / name).is_file()
             for ln in (where / name).read_text().splitlines()]
    return [json.loads(line) for line in lines if line.strip()]


def _entry_folder(r: Path, kind: str, key: str) -> Path:
    return cache_dir.subfolder(cache_dir.subfolder(r, kind), key)


def compiled(source: Path, key: str, run: Callable[[Path, Path], None]) -> tuple[Path, bool]:
    """The object for ``source`` under ``key`` (its flags and tools), compiled by ``run(out, depfile)``
    if no entry matches. Returns the object's path and whether it came from the cache."""
    def build(r: Path) -> tuple[Path, bool]:
        folder = _entry_folder(r, "objects", key)
        hit = _lookup(folder)
        if hit is not None:
            return hit, True
        with cache_dir.locked(folder):
            hit = _lookup(folder)  # another worker may have built it while we waited
            if hit is not None:
                return hit, True
            with cache_dir.temp_folder(r, folder) as tmp:
                out, deps = tmp / "out.o", tmp / "out.d"
                t0 = time.perf_counter()
                run(out, deps)
                files = _dependencies(deps.read_text()) if deps.exists() else [str(source)]
                sums = {f: _file_digest(f) for f in files}
                name = digest(json.dumps(sums, sort_keys=True)) + ".o"
                data = out.read_bytes()
                cache_dir.place(folder, out, name)
                cache_dir.write(r, folder, "manifest.json", _describe(data, deps=sums, object=name))
                _log_compile(r, f"compile {source.name}", time.perf_counter() - t0)
            return folder / name, False

    return _building(build)


def _lookup(folder: Path) -> Path | None:
    manifest = _record(folder, "manifest.json")
    try:
        sums, name, size, sha = manifest["deps"], manifest["object"], manifest["size"], manifest["sha256"]  # type: ignore[index]
    except (TypeError, KeyError):
        return None
    if any(_file_digest(f) != d for f, d in sums.items()) or not _intact(folder, name, size, sha):
        return None
    _used_now(folder)
    return folder / name


def _dependencies(make_rule: str) -> list[str]:
    """The files of a clang -MD rule ("out.o: a.c b.h \\\\\\n c.h")."""
    body = make_rule.split(":", 1)[1].replace("\\\n", " ")
    return [os.path.abspath(p.replace("\\ ", " ")) for p in body.split() if p != "\\"]


def product(key: str, name: str, make: Callable[[Path], None], kind: str = "linked") -> tuple[Path, bool]:
    """A build product that depends only on ``key`` (e.g. a linked object from known inputs), made by
    ``make(out)``, which may use ``out``'s folder (private to this build) for its scratch files."""
    def build(r: Path) -> tuple[Path, bool]:
        folder = _entry_folder(r, kind, key)
        if _product_hit(folder, name):
            return folder / name, True
        with cache_dir.locked(folder):
            if _product_hit(folder, name):
                return folder / name, True
            with cache_dir.temp_folder(r, folder) as tmp:
                out = tmp / name
                t0 = time.perf_counter()
                make(out)
                data = out.read_bytes()
                cache_dir.place(folder, out, name)
                cache_dir.write(r, folder, name + ".sum", _describe(data))
                _log_compile(r, f"link {name}", time.perf_counter() - t0)
        return folder / name, False

    return _building(build)


def _product_hit(folder: Path, name: str) -> bool:
    sums = _record(folder, name + ".sum")
    if sums is None or not _intact(folder, name, sums.get("size", -1), sums.get("sha256", "")):
        return False
    _used_now(folder)
    return True


def source_file(text: str) -> Path:
    """A file holding ``text`` (a libbpf source given as text: clang compiles files), named by its content."""
    def build(r: Path) -> Path:
        folder = cache_dir.subfolder(r, "sources")
        name = f"{digest(text)}.bpf.c"
        if cache_dir.read(folder, name) != text.encode():
            cache_dir.write(r, folder, name, text.encode())
        return folder / name

    return _building(build)
