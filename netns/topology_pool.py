"""Topologies made one ahead, on a thread of their own, while the current test runs; and a used one
stopped at once (its links down) and closed there later.

Isolation is not traded: every test still gets namespaces no test had before. What moves off the
test's path is only work whose timing no test can observe: making the next pair of namespaces, and
closing the file descriptors of a pair whose links are already down (an AF_PACKET socket's close waits
for an RCU grace period, ~10 ms). Once ``retire()`` returns, no frame crosses the used veth in either
direction: a filter, receiver or map shared with the next test sees nothing of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable

from .topology import Topology

_worker: concurrent.futures.ThreadPoolExecutor | None = None


def _thread() -> concurrent.futures.ThreadPoolExecutor:
    """pktassert's background thread (one per process, made on first use): it runs what it is given in order."""
    global _worker  # noqa: PLW0603 - one per process
    if _worker is None:
        _worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pktassert-netns")
    return _worker


def later(fn: Callable[[], object]) -> None:
    """Run ``fn`` on the background thread, after what was given to it before."""
    _thread().submit(_quietly, fn)


def _quietly(fn: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # closing what is already stopped: nothing a test could act on
        fn()


def drain() -> None:
    """Wait until everything given to ``later()`` so far is done."""
    if _worker is not None:
        _worker.submit(lambda: None).result()


def _made_here(mtu: int) -> Topology:
    """A topology made on this (background) thread, its netlink sockets of this thread closed: the
    test's thread opens its own (Namespace.ipr)."""
    topo = Topology(mtu=mtu)
    topo.drop_iprs()
    return topo


class TopologyPool:
    """``take()`` a fresh topology (made ahead), ``retire()`` it when the test is done."""

    def __init__(self, mtu: int) -> None:
        self._mtu = mtu
        self._next: concurrent.futures.Future[Topology] | None = None

    def take(self, label: str) -> Topology:
        """A topology no test has used, labelled ``label`` (in Python: the kernel-side alias was set
        when it was made, naming this process, which is what pktassert-cleanup needs)."""
        made = self._next or _thread().submit(_made_here, self._mtu)
        self._next = _thread().submit(_made_here, self._mtu)  # the next test's, made while this one runs
        topo = made.result()
        topo.label = f"{topo.label} {label}"
        return topo

    @staticmethod
    def retire(topo: Topology) -> None:
        """Stop ``topo`` now (every link down), close it on the background thread."""
        try:
            topo.stop()  # a second time is a no-op (Case.close stops it first)
        finally:
            topo.drop_iprs()  # this thread's, closed by it (pyroute2 leaks them otherwise)
            later(topo.close)

    def close(self) -> None:
        """Close the topology made ahead, and wait for every pending close."""
        made, self._next = self._next, None
        if made is not None:
            with contextlib.suppress(Exception):  # a failed build raised nothing yet: no test asked for it
                made.result().close()
        drain()
