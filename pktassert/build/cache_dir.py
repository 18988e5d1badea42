"""A folder root can rely on: whose it is, what is in it, and what a dead writer left there.

Root loads into the kernel what the build cache holds, so nobody else may write there: the folder
must be owned by the effective user, and it and every folder above it owned by root or that user
and not writable by group or others (a sticky folder above, like /tmp, is fine), as ssh's
StrictModes and pip's cache demand. Inside it nothing is opened through a link (O_NOFOLLOW,
relative to a checked folder's fd), an entry that is not ours or is writable by others is not
used, and files are written as a temporary and renamed. A temporary's name carries its writer's
token, and a writer holds ``.writers/<token>`` locked while it has any: a sweep tells a dead writer's
leftovers from a live one's, across processes, xdist workers and PID namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pktassert.errors import PktassertError
from pktassert.machine import reaper

TEMP = ".tmp-"          # every temporary's name starts so: .tmp-<token>-<random>
WRITERS = ".writers"    # .writers/<token>: locked by the live writer with that token
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class CacheRefused(PktassertError):
    """The cache folder is not one root can rely on."""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def why_untrusted(folder: Path) -> str | None:
    """Why root cannot rely on ``folder`` (an existing folder), or None."""
    return _chain_problem(Path(os.path.realpath(folder)), owned=True)


def _chain_problem(real: Path, owned: bool) -> str | None:
    """What is wrong with ``real`` (owned by us if ``owned``, else by us or root) and the folders above it."""
    me = os.geteuid()
    for i, p in enumerate([real, *real.parents]):
        st = os.stat(p)
        if not stat.S_ISDIR(st.st_mode):
            return f"{p} is not a folder"
        owners = (me,) if i == 0 and owned else (0, me)
        if st.st_uid not in owners:
            return (f"{p} is owned by {_user(st.st_uid)}, not by {_user(me)} who runs the tests"
                    + ("" if owners == (me,) else " (or root)"))
        if st.st_mode & 0o022 and not (i > 0 and st.st_mode & stat.S_ISVTX):
            return f"{p} is writable by others (mode {stat.filemode(st.st_mode)})"
    return None


def refusal(folder: Path, why: str, option: str) -> str:
    return (f"pktassert will not use the build cache {folder}: {why}, so another user could choose the BPF "
            f"objects this run loads into the kernel. Fix: `chown -R {os.geteuid()} {folder} && chmod -R go-w "
            f"{folder}`, or choose a folder of your own with {option}.")


def ensure(folder: Path) -> Path:
    """``folder`` made (0700) if missing and checked; its real path. Raises CacheRefused, OSError."""
    real = Path(os.path.realpath(folder))
    missing = [p for p in [real, *real.parents] if not p.exists()]
    if missing:  # nothing is made under a folder another user controls (a user's home under sudo -E)
        why = _chain_problem(missing[-1].parent, owned=False)
        if why:
            raise CacheRefused(why)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, 0o700)
    why = why_untrusted(real)
    if why:
        raise CacheRefused(why)
    return real


@contextlib.contextmanager
def opened(folder: Path) -> Iterator[int]:
    """An fd of ``folder`` (a folder of ours, never a link)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


_checked: dict[Path, tuple[int, int]] = {}  # folder -> (device, inode) when found ours


def subfolder(parent: Path, name: str) -> Path:
    """``parent/name``, made 0700 if missing; one found there that is not ours (a link, another's) is
    replaced. ``parent`` is the root or a subfolder of it."""
    path = parent / name
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if _checked.get(path) == (st.st_dev, st.st_ino):
            return path
    with opened(parent) as dfd:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dfd)
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not (stat.S_ISDIR(st.st_mode) and _ours(st)):
            _remove(dfd, name, st)
            os.mkdir(name, 0o700, dir_fd=dfd)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    _checked[path] = (st.st_dev, st.st_ino)
    return path


def _remove(dfd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _open_ours(dfd: int, name: str, flags: int) -> int:
    """``name`` in the folder ``dfd``, created if missing (0600); a link or a file not ours found there
    is removed first, never followed or used."""
    for _ in range(3):
        try:
            fd = os.open(name, flags | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=dfd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            os.unlink(name, dir_fd=dfd)
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and _ours(st):
            return fd
        os.close(fd)
        _remove(dfd, name, st)
    raise OSError(errno.EEXIST, f"cannot replace {name}")


def read(folder: Path, name: str) -> bytes | None:
    """The file ``folder/name`` if it is ours (a regular file, ours, not writable by others), else None
    (and a file that is not ours is removed: it is rebuilt)."""
    try:
        with opened(folder) as dfd:
            try:
                fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ELOOP:  # a link: never followed, never used
                    os.unlink(name, dir_fd=dfd)
                return None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and _ours(st):
                    return f.read()
            os.unlink(name, dir_fd=dfd)
            return None
    except OSError:
        return None


def token() -> str:
    """This process's writer token (see writing())."""
    if _token[0] != os.getpid():
        _token[:] = [os.getpid(), secrets.token_hex(6)]
        _held.clear()
    return str(_token[1])


_token: list = [0, ""]
_held: dict[Path, list[int]] = {}  # root -> [the fd holding .writers/<token> locked, how many writes use it]


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """This process marked as a live writer under ``root`` while it has temporaries there."""
    name = token()
    if root not in _held:
        writers = subfolder(root, WRITERS)
        reaper.register(writers / name)  # a kill leaves nothing: the reaper removes what is still registered
        with opened(writers) as dfd:
            while True:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=dfd)
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel when we die, however we die
                with contextlib.suppress(FileNotFoundError):  # a sweep may unlink it before we lock: again
                    if os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                        break
                os.close(fd)
        _held[root] = [fd, 0]
    _held[root][1] += 1
    try:
        yield
    finally:
        _held[root][1] -= 1
        if _held[root][1] == 0:
            fd = _held.pop(root)[0]
            with contextlib.suppress(OSError), opened(root / WRITERS) as dfd:
                os.unlink(name, dir_fd=dfd)
            os.close(fd)
            reaper.release(root / WRITERS / name)


def temp_name() -> str:
    return f"{TEMP}{token()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def temp_folder(root: Path, parent: Path) -> Iterator[Path]:
    """A private folder in ``parent`` (under ``root``) for one build; removed after, whatever happens."""
    with writing(root):
        name = temp_name()
        reaper.register(parent / name)
        with opened(parent) as dfd:
            os.mkdir(name, 0o700, dir_fd=dfd)
        try:
            yield parent / name
        finally:
            with opened(parent) as dfd:
                shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
            reaper.release(parent / name)


def write(root: Path, folder: Path, name: str, data: bytes) -> None:
    """``folder/name`` replaced by ``data`` whole (a temporary renamed): readers see all or nothing."""
    tmp = temp_name()
    with writing(root), opened(folder) as dfd:
        reaper.register(folder / tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        finally:
            reaper.release(folder / tmp)


def place(folder: Path, built: Path, name: str) -> None:
    """Rename ``built`` (in a temp folder of ``folder``) to ``folder/name``, replacing whatever is there."""
    with opened(folder) as dfd, opened(built.parent) as src:
        os.replace(built.name, name, src_dir_fd=src, dst_dir_fd=dfd)


def append(folder: Path, name: str, line: str) -> None:
    """One line appended to ``folder/name`` (a log), never through a link."""
    with opened(folder) as dfd, os.fdopen(_open_ours(dfd, name, os.O_WRONLY | os.O_APPEND), "a") as f:
        f.write(line)


@contextlib.contextmanager
def locked(folder: Path, name: str = "lock") -> Iterator[None]:
    """``folder/name`` locked (flock, released when closed, also if we die)."""
    with opened(folder) as dfd:
        fd = _open_ours(dfd, name, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _alive(writers: int, name: str) -> bool:
    """Whether the writer ``name`` holds its lock (a writer of this process counts as alive)."""
    if name == _token[1] and _token[0] == os.getpid():
        return True
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=writers)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def sweep(root: Path, only: str | None = None) -> list[Path]:
    """Remove the temporaries of writers that died (or only of writer ``only``); what went."""
    if not (root / WRITERS).is_dir():
        return []
    gone: list[Path] = []
    with opened(root / WRITERS) as writers:
        alive: dict[str, bool] = {}
        for folder, dirs, names in os.walk(root):
            if Path(folder).name == WRITERS:
                continue
            for name in [*dirs, *names]:
                if not name.startswith(TEMP):
                    continue
                writer = name[len(TEMP):].split("-")[0]
                if only not in (None, writer):
                    continue
                if writer not in alive:
                    alive[writer] = _alive(writers, writer)
                if not alive[writer]:
                    path = Path(folder) / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    gone.append(path)
            dirs[:] = [d for d in dirs if not d.startswith(TEMP)]
        for name in os.listdir(writers):
            if name not in (_token[1],) and not _alive(writers, name):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=writers)
    return gone


OWNER = ".owner"  # a private cache's: locked by the process that made it, for its life
_owned: list[int] = []


def own(folder: Path) -> None:
    """Mark ``folder`` (a private cache) as in use while this process lives."""
    fd = os.open(folder / OWNER, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _owned.append(fd)


def held(lock: Path) -> bool:
    """Whether another open file holds ``lock`` flocked now (a missing lock: no)."""
    try:
        fd = os.open(lock, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def in_use(folder: Path, young: float = 60.0) -> bool:
    """Whether a live process owns ``folder`` (one just made, not yet owned, counts too)."""
    if not (folder / OWNER).exists():
        return time.time() - os.lstat(folder).st_mtime < young
    return held(folder / OWNER)
