"""A network namespace held only by file descriptors, so the kernel reclaims it when we exit or crash."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute, netns

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _current() -> int:
    # setns is per thread, so save this thread's namespace, not the process's.
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class Namespace:
    """An anonymous netns: no bind mount under /run/netns, nothing for a crash to leave behind.

    pyroute2 only creates named namespaces (bind mounts that outlive a crashed creator), so this
    calls unshare(2) itself and keeps the namespace alive with an fd and the sockets opened in it.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.stopped = False  # its links are down (Topology.stop): nothing attached there runs again
        home = _current()
        try:
            if _libc.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise PermissionError(err, f"unshare(CLONE_NEWNET) for {label}: {os.strerror(err)}")
            self.fd = _current()
        finally:
            netns.setns(home)
            os.close(home)
        self._iprs: dict[int, IPRoute] = {}
        self.ipr  # noqa: B018 - opened now, in the creating thread: a namespace that cannot be used fails here

    @property
    def ipr(self) -> IPRoute:
        """pyroute2's IPRoute inside this namespace, one per thread that asks. Why per thread: pyroute2
        (0.9) keeps its netlink socket per thread and opens one for a thread that has none in whatever
        namespace that thread is in; one IPRoute used from two threads (a topology made ahead on a
        background thread) would act on the root namespace. Measured: ~0.65 ms to open one."""
        tid = threading.get_ident()
        ipr = self._iprs.get(tid)
        if ipr is None:
            if self.fd < 0:
                raise RuntimeError(f"namespace {self.label} is closed")
            with self.entered():
                ipr = self._iprs[tid] = IPRoute()  # a netlink socket stays bound to the namespace it was opened in
        return ipr

    @property
    def path(self) -> str:
        """A path that names this namespace for tools that want one (pyroute2, ip -n can't)."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def drop_ipr(self) -> None:
        """Close the calling thread's IPRoute here (it opens another if asked again). pyroute2 frees an
        IPRoute's event loop only when the thread that made it closes it: 3 fds leak otherwise."""
        ipr = self._iprs.pop(threading.get_ident(), None)
        if ipr is not None:
            ipr.close()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with this thread inside the namespace."""
        home = _current()
        netns.setns(self.fd)
        try:
            yield
        finally:
            netns.setns(home)
            os.close(home)

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        with self.entered():
            return socket.socket(family, kind, proto)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process inside this namespace that the kernel kills when this process dies
        (PR_SET_PDEATHSIG), so it cannot keep the namespace alive after a crash. Call it from
        the thread that owns the test (the signal follows the creating thread)."""
        fd = self.fd

        def enter() -> None:  # in the child, between fork and exec
            if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
                os._exit(126)
            netns.setns(fd)

        return subprocess.Popen(args, preexec_fn=enter, **kwargs)

    def sysctl(self, key: str, value: str | int) -> None:
        # /proc/sys/net resolves against the opening thread's namespace.
        with self.entered(), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))

    def gro_off(self, ifname: str) -> None:
        """Switch GRO off on ``ifname`` here (pyroute2's ethtool, bound to the entering thread's namespace)."""
        from pyroute2.ethtool import Ethtool  # noqa: PLC0415 - pyroute2's ethtool opens a socket at import: only when asked

        with self.entered():
            ethtool = Ethtool()
            try:
                features = ethtool.get_features(ifname)
                features.features["rx-gro"].enable = False
                ethtool.set_features(ifname, features)
            finally:
                ethtool.close()

    def close(self) -> None:
        """Drop our references; the kernel then tears down the namespace and every link in it."""
        if self.fd < 0:
            return
        self.drop_ipr()
        while self._iprs:  # another thread's (pktassert's own threads drop theirs first: see drop_ipr)
            self._iprs.popitem()[1].close()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
