"""A watchdog per process that removes what the process made and did not remove, once it is dead.

A killed process (SIGKILL, or SIGTERM before pktassert could turn it into Ctrl-C) runs no finalizer:
what it made outside itself stays. Kernel objects held by file descriptors go with it; a tracefs
instance, a temporary folder or a half-written file do not. So, the first time a process registers
such a thing, it starts a reaper: a small Python process in a session of its own (a kill of the
process group does not take it) that shares nothing with it but a pidfd of its owner (readable once
the owner has exited and its files are closed), a SOCK_SEQPACKET socket over which the owner
registers and releases paths, and the tracefs mount fd the owner hands over with an instance. When
the owner is dead the reaper removes what is still registered, then exits. It never touches what a
live process registered, nor anything unregistered: nothing of a live run is ever removed.

Registering costs one ``sendmsg`` (~15 us); the reaper is started once per process (per xdist
worker), lazily, and costs a Python start (~20 ms, in parallel) and ~12 MB. This file runs as that
script, on the standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from types import FrameType

PATH, TRACEFS = b"P", b"T"
_MAX = 1 << 16  # a message: the verb, the kind, a path


class _Link:
    def __init__(self) -> None:
        owner = os.pidfd_open(os.getpid())  # ours before the reaper starts: no PID reuse can fool it
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(owner),
                                          str(theirs.fileno())],
                                         pass_fds=(owner, theirs.fileno()), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(owner)
            theirs.close()
        self.pid, self.sock = os.getpid(), mine


_lock = threading.Lock()
_link: _Link | None = None
_owned: dict[tuple[bytes, bytes], int | None] = {}  # (kind, path) -> the fd that goes with it, to send again


def register(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` (a file, or a folder and all in it) if this process dies before ``release(path)``.
    Register before making it: a path that never came to be is no harm."""
    _send(b"+", PATH, os.fsencode(os.path.abspath(path)))


def release(path: str | os.PathLike[str]) -> None:
    """``path`` is this process's no longer: removed, or renamed into its final place."""
    _send(b"-", PATH, os.fsencode(os.path.abspath(path)))


def register_tracefs(relative: str, mount_fd: int) -> None:
    """Remove the tracefs instance at ``relative`` (``instances/NAME``) under the mount ``mount_fd``."""
    if not relative.startswith("instances/") or "/" in relative[len("instances/"):] or ".." in relative:
        raise ValueError(f"not a tracefs instance: {relative!r}")
    _send(b"+", TRACEFS, relative.encode(), mount_fd)


def release_tracefs(relative: str) -> None:
    _send(b"-", TRACEFS, relative.encode())


def pid() -> int | None:
    """This process's reaper, if one was started."""
    return _link.proc.pid if _link is not None and _link.pid == os.getpid() else None


def _send(verb: bytes, kind: bytes, path: bytes, fd: int | None = None) -> None:
    global _link
    if b"\n" in path or b"\0" in path:
        raise ValueError(f"a path with a newline or NUL: {path!r}")
    with _lock:
        if verb == b"+":
            _owned[(kind, path)] = fd
        elif _owned.pop((kind, path), ()) == () or _link is None:
            return  # never registered, or no reaper yet: nothing to tell
        for _ in range(2):
            try:
                if _link is None:  # the first reaper, or one after the last was killed: it learns all that is ours
                    _link = _Link()
                    for (k, p), f in _owned.items():
                        _message(_link, b"+", k, p, f)
                else:
                    _message(_link, verb, kind, path, fd)
                return
            except OSError:  # the reaper is gone: start another
                if _link is not None:
                    _link.sock.close()
                    _link = None


def _message(link: _Link, verb: bytes, kind: bytes, path: bytes, fd: int | None) -> None:
    socket.send_fds(link.sock, [verb + kind + path], [fd] if fd is not None else [])


def _forget_in_child() -> None:
    """A forked child owns nothing of its parent's, and has no reaper yet."""
    global _link, _lock
    _link, _lock = None, threading.Lock()
    _owned.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C: pytest tears down (fixtures, namespaces, instances) and exits 2."""


class OrderlySigterm:
    """SIGTERM ends a pytest process as Ctrl-C does (teardown runs); a second SIGTERM ends it at once.
    Only where SIGTERM still has its default action (a user's handler is kept); undone at unconfigure."""

    def __init__(self) -> None:
        self.installed = False
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, self._terminate)
                self.installed = True

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated("SIGTERM: tearing down as after Ctrl-C (a second SIGTERM ends the process at once)")

    def pytest_unconfigure(self) -> None:
        if self.installed and signal.getsignal(signal.SIGTERM) == self._terminate:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def orderly_sigterm(config: object) -> None:
    """Install OrderlySigterm for this pytest process (the main one, or an xdist worker)."""
    config.pluginmanager.register(OrderlySigterm(), "pktassert-sigterm")  # type: ignore[attr-defined]


# ---- the reaper process itself ----

def _serve(owner: int, sock: socket.socket) -> None:
    owned: set[tuple[bytes, bytes]] = set()
    mount: int | None = None
    watching = [owner, sock.fileno()]
    while True:
        ready, _, _ = select.select(watching, [], [])
        # The owner may have died just after its last messages: take them all before acting.
        while sock.fileno() in watching:
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX, 4, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data:  # the owner closed its end (it is exiting): its pidfd says when it is gone
                watching.remove(sock.fileno())
                break
            verb, kind, path = data[:1], data[1:2], data[2:]
            if verb == b"+":
                owned.add((kind, path))
            else:
                owned.discard((kind, path))
            for fd in fds:
                if kind == TRACEFS and mount is None:
                    mount = fd
                else:
                    os.close(fd)
        if owner in ready:
            break
    for kind, path in owned:
        _remove(kind, path, mount)


def _remove(kind: bytes, path: bytes, mount: int | None) -> None:
    with contextlib.suppress(OSError):
        if kind == TRACEFS:
            if mount is not None:
                _remove_instance(f"/proc/self/fd/{mount}/".encode() + path, b"/" + path + b"/")
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _remove_instance(where: bytes, inside: bytes) -> None:
    """rmdir the instance; while the kernel says EBUSY, wait for the processes that hold a file of it
    open (a child forked from the owner may still have its trace_pipe), then again."""
    for _ in range(8):
        try:
            os.rmdir(where)
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                return
        holders = _holders(inside)
        if not holders:
            continue  # the holder may have exited between rmdir and the scan: try again (8 tries in all)
        for pidfd in holders:
            select.select([pidfd], [], [])
            os.close(pidfd)


def _holders(inside: bytes) -> list[int]:
    """pidfds of the processes with an fd to a file under ``inside`` (a path in tracefs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            held = any(inside in os.readlink(f"/proc/{pid}/fd/{fd}").encode() for fd in os.listdir(f"/proc/{pid}/fd"))
            if held:
                found.append(os.pidfd_open(int(pid)))
        except OSError:
            continue
    return found


def main(argv: list[str]) -> int:
    owner, fd = int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the terminal's pytest is not for us
    _serve(owner, socket.socket(fileno=fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
