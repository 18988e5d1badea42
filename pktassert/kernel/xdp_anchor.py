"""Keep pktassert's XDP programs in the kernel's XDP dispatcher between tests, so attaching one to a
test's fresh veth costs no RCU grace period.

Why: every native or generic XDP attach and detach goes through bpf_prog_change_xdp(), which adds the
program to (or removes it from) the kernel's XDP dispatcher (kernel/bpf/dispatcher.c) and, when the
dispatcher's set of programs changes, rewrites its image and waits in synchronize_rcu(). The set counts
users per program: a program already attached elsewhere changes nothing. Measured here (6.18, veth): an
attach of a program attached nowhere else ~10 ms, of one attached elsewhere ~0.4 ms. So each program is
also attached once, for as long as it is loaded, to an interface that is down in a namespace of ours
(no frame ever reaches it), and released when the program closes.
"""

from __future__ import annotations

import contextlib
import ctypes

from pktassert.kernel import libbpf
from pktassert.netns import Namespace, owner


def prog_id(fd: int) -> int:
    """The kernel's id of the program ``fd`` refers to (fds are reused; ids are not)."""
    info = (ctypes.c_uint32 * 2)()  # struct bpf_prog_info: type, id
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if libbpf.lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)):
        raise OSError(ctypes.get_errno(), f"bpf_obj_get_info_by_fd({fd})")
    return int(info[1])


class XdpAnchor:
    """A namespace of veth ends, down, each holding one loaded XDP program of this process."""

    def __init__(self) -> None:
        self._ns: Namespace | None = None
        self._held: dict[int, int] = {}   # prog id -> ifindex holding it
        self._free: list[int] = []        # ifindexes holding nothing
        self._pairs = 0

    def hold(self, fd: int) -> bool:
        """Keep the program ``fd`` in the dispatcher until ``release(fd)`` (idempotent). False where the
        kernel refuses: attaches then cost a grace period each, as without this, and nothing else."""
        try:
            pid = prog_id(fd)
            if pid in self._held:
                return True
            ns = self._namespace()
            if not self._free:
                self._pairs += 1
                ns.ipr.link("add", ifname=f"xa{self._pairs}", kind="veth", peer={"ifname": f"xb{self._pairs}"})
                self._free += [ns.ipr.link_lookup(ifname=f"x{end}{self._pairs}")[0] for end in "ab"]
            ifindex = self._free.pop()
            ns.ipr.link("set", index=ifindex, xdp_fd=fd)  # both ends stay down: no traffic, no NAPI
        except Exception:  # noqa: BLE001 -- only slower without it
            return False
        self._held[pid] = ifindex
        return True

    def release(self, fd: int) -> None:
        """The program ``fd`` is about to close: let it go (it leaves the dispatcher: one grace period)."""
        if self._ns is None:
            return
        try:
            ifindex = self._held.pop(prog_id(fd))
        except (KeyError, OSError):
            return
        with contextlib.suppress(Exception):
            self._ns.ipr.link("set", index=ifindex, xdp_fd=-1)
            self._free.append(ifindex)

    def _namespace(self) -> Namespace:
        if self._ns is None:
            ns = Namespace("pktassert xdp anchor")
            # Marked as the topologies are: pktassert-cleanup recognises it, and a crashed run's is freed.
            ns.ipr.link("set", index=1, ifalias=f"{owner.PREFIX} {owner.mark()} xdp anchor")
            self._ns = ns
        return self._ns

    def close(self) -> None:
        """Drop the namespace: the kernel detaches everything it holds."""
        self._held.clear()
        self._free.clear()
        if self._ns is not None:
            self._ns.close()
            self._ns = None
