"""BPF programs at netfilter hooks (BPF_PROG_TYPE_NETFILTER, Linux 6.4): the program type and the
link that hangs one at a hook of a namespace with a priority.

Why a raw bpf(2) call: Debian's libbpf 1.1 predates netfilter links (bpf_program__attach_netfilter
came with libbpf 1.3); the link is the kernel's own, made with BPF_LINK_CREATE as libbpf 1.3 makes it.
A link belongs to the namespace of the thread that creates it, and goes when its fd is closed."""

from __future__ import annotations

import ctypes
import errno
import os

from pktassert.kernel import btf_types
from pktassert.netns import Namespace

PROG_TYPE, ATTACH_TYPE = 32, 45  # BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER (uapi/linux/bpf.h)
SYS_BPF, BPF_LINK_CREATE = 321, 28  # x86_64
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}  # enum nf_inet_hooks
# The kernel refuses INT_MIN and INT_MAX; IPv6 conntrack confirms at INT_MAX - 1 (IPv4 at INT_MAX).
FIRST, LAST = -(2**31) + 1, 2**31 - 3
TRIES = 16  # a BPF hook may share its priority with no other hook (EBUSY): the next ones inward are tried
KERNEL_FEATURE = "BPF netfilter programs (Linux 6.4)"


class _Attr(ctypes.Structure):  # union bpf_attr, its link_create.netfilter part
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("pf", ctypes.c_uint32), ("hooknum", ctypes.c_uint32),
                ("priority", ctypes.c_int32), ("nf_flags", ctypes.c_uint32), ("_rest", ctypes.c_uint8 * 64)]


_libc = ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """Whether the running kernel has netfilter programs (its BTF has their context)."""
    return btf_types.kernel().find("bpf_nf_ctx", btf_types.STRUCT) > 0


def attach(ns: Namespace, prog_fd: int, pf: int, hook: str, priority: int) -> int:
    """A link fd: ``prog_fd`` runs at ``hook`` of family ``pf`` in ``ns`` at ``priority``, or the nearest
    free one inward (toward 0) when another hook has it."""
    inward = -1 if priority > 0 else 1
    with ns.entered():
        for step in range(TRIES):
            attr = _Attr(prog_fd=prog_fd, attach_type=ATTACH_TYPE, pf=pf, hooknum=HOOKS[hook],
                         priority=priority + inward * step)
            fd = _libc.syscall(SYS_BPF, BPF_LINK_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
            err = ctypes.get_errno() if fd < 0 else 0
            if err != errno.EBUSY:
                break
    if fd < 0:
        raise OSError(err, f"netfilter link at {hook} (family {pf}, priority {priority}): {os.strerror(err)}")
    return int(fd)
