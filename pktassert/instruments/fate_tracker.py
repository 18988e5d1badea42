"""The fate tracker (bpf/fates.bpf.c) loaded by libbpf and attached to the kernel's tracepoints:
its fate slots mmapped, its counters, and how it sees a test socket take a packet: a filter on the
socket where the kernel has bpf_cast_to_kern_ctx (6.2), else a kprobe where socket filters run."""

from __future__ import annotations

import ctypes
import mmap
import os
import socket

import numpy as np

from pktassert.bpf import DIR as HERE
from pktassert.build import diagnostics, libbpf_build
from pktassert.errors import ProgramError
from pktassert.instruments.record import const, dtype_of
from pktassert.kernel import btf_types, libbpf, netfilter_link, xdp_anchor
from pktassert.machine import host
from pktassert.netns import Namespace

SO_ATTACH_BPF = 50
SO_NETNS_COOKIE = 71
DELIVERY_ENV = "PKTASSERT_FATES_DELIVERY"  # "kprobe": the pre-6.2 way on any kernel (tests compare both)
# How a delivery to a test socket is seen -> (the program put on test sockets, the programs not loaded).
DELIVERY = {"socket": ("pktassert_on_socket", ("pktassert_on_filter", "pktassert_keep")),
            "kprobe": ("pktassert_keep", ("pktassert_on_socket",))}
TRACEPOINTS = ("pktassert_on_receive", "pktassert_on_drop", "pktassert_on_consume", "pktassert_on_reset",
               "pktassert_on_icmp", "pktassert_on_queue", "pktassert_on_xmit")
# Netfilter programs (kernel/netfilter_link.py): (program, hook, priority), for IPv4 and IPv6 each.
CONNTRACK_PRIORITY = -200  # NF_IP_PRI_CONNTRACK: the connection is known after it
NETFILTER = (("pktassert_nf_ct", "prerouting", CONNTRACK_PRIORITY + 1), ("pktassert_nf_ct", "output", CONNTRACK_PRIORITY + 1),
             ("pktassert_nf_mid", "input", netfilter_link.FIRST), ("pktassert_nf_mid", "forward", netfilter_link.FIRST),
             ("pktassert_nf_mid", "postrouting", netfilter_link.FIRST),
             ("pktassert_nf_end", "input", netfilter_link.LAST), ("pktassert_nf_end", "postrouting", netfilter_link.LAST),
             ("pktassert_nf_out", "output", netfilter_link.FIRST))


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the namespace ``sock`` was opened in."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


class FateTracker:
    """One per DUT: tracks the packets that enter its veth's stack; nothing attached to the DUT itself."""

    def __init__(self) -> None:
        host.check("kernel BTF", "clang", "drop-reasons", "tracepoints")
        kprobe = os.environ.get(DELIVERY_ENV) == "kprobe" or host.problem("cast-to-kern-ctx") is not None
        self.delivery = "kprobe" if kprobe else "socket"
        obj_path, _ = libbpf_build.compile_source(HERE / "fates.bpf.c", ("-I", str(HERE)))
        lib = libbpf.lib()
        with libbpf.messages() as said:
            self.obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
            if not self.obj:
                raise ProgramError(f"pktassert's fate tracker (bpf/fates.bpf.c) does not open: {' '.join(said)}")
            self.netfilter = netfilter_link.supported()
            for name in {n for n, _, _ in NETFILTER}:  # libbpf 1.1 does not know SEC("netfilter")
                prog = lib.bpf_object__find_program_by_name(self.obj, name.encode())
                if self.netfilter:
                    lib.bpf_program__set_type(prog, netfilter_link.PROG_TYPE)
                    lib.bpf_program__set_expected_attach_type(prog, netfilter_link.ATTACH_TYPE)
                else:  # an older kernel: connection states and NAT are refused, naming the feature
                    lib.bpf_program__set_autoload(prog, False)
            for unused in DELIVERY[self.delivery][1]:
                lib.bpf_program__set_autoload(lib.bpf_object__find_program_by_name(self.obj, unused.encode()), False)
            rc = lib.bpf_object__load(self.obj)
        if rc:
            lib.bpf_object__close(self.obj)
            why = diagnostics.libbpf_verifier_message("\n".join(said), os.strerror(-rc if rc < 0 else rc))
            raise ProgramError(f"pktassert's fate tracker (bpf/fates.bpf.c) does not load on this kernel "
                               f"({os.uname().release}): {why}")
        self._links: list[int] = []
        self._mm: mmap.mmap | None = None
        self._generation = 0
        self._netns = self._ifindex = 0
        try:
            attached = TRACEPOINTS + (("pktassert_on_filter",) if self.delivery == "kprobe" else ())
            for name in attached:
                prog = lib.bpf_object__find_program_by_name(self.obj, name.encode())
                with libbpf.messages() as said:
                    link = lib.bpf_program__attach(prog)
                if not link and name == "pktassert_on_filter":
                    why = "; ".join(x.strip() for x in said if x.strip())
                    raise ProgramError(f"pktassert's fate tracker sees a test socket take a packet with the kfunc "
                                       f"bpf_cast_to_kern_ctx (Linux 6.2 and later) or, on older kernels, a kprobe; "
                                       f"this kernel ({os.uname().release}) has no bpf_cast_to_kern_ctx and its kprobe "
                                       f"cannot attach ({why}). Fix: a 6.2 or later kernel, or one built with "
                                       f"CONFIG_KPROBES and CONFIG_KPROBE_EVENTS.")
                if not link:
                    raise ProgramError(f"pktassert's fate tracker cannot attach {name}: {' '.join(said)}")
                self._links.append(link)
            self.socket_fd = self._prog_fd(DELIVERY[self.delivery][0])
            if self.delivery == "kprobe":  # the kprobe knows a test socket by this program on it
                key, value = ctypes.c_uint32(0), ctypes.c_uint32(xdp_anchor.prog_id(self.socket_fd))
                if lib.bpf_map_update_elem(self._map_fd("pktassert_keep_id"), ctypes.byref(key), ctypes.byref(value), 0):
                    raise OSError(ctypes.get_errno(), "pktassert_keep_id")
            self.trace_fd = self._prog_fd("pktassert_on_trace")
            self._config_fd = self._map_fd("pktassert_fate_config")
            self._out_fd = self._map_fd("pktassert_out")
            btf = btf_types.Btf(lib.bpf_object__btf(self.obj))
            self.dtype = dtype_of(btf.ctype(btf.find("pktassert_fate", btf_types.STRUCT)))
            self._mm = mmap.mmap(self._map_fd("pktassert_fates"), const("SLOTS") * self.dtype.itemsize, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.slots = np.frombuffer(self._mm, self.dtype)
        except BaseException:
            self.close()
            raise

    def _map_fd(self, name: str) -> int:
        return int(libbpf.lib().bpf_map__fd(libbpf.lib().bpf_object__find_map_by_name(self.obj, name.encode())))

    def _prog_fd(self, name: str) -> int:
        return int(libbpf.lib().bpf_program__fd(libbpf.lib().bpf_object__find_program_by_name(self.obj, name.encode())))

    def watch(self, netns: int, ifindex: int) -> None:
        """Track packets arriving on ``ifindex`` in the namespace with cookie ``netns``, from now on
        only: records and sk_buffs of what was watched before are forgotten."""
        self._generation += 1
        self.slots.fill(0)
        self._configure(netns, ifindex, raw=False)

    def track_raw(self) -> None:
        """Also follow data buffers: a raw socket is handed a clone of the packet (the same buffer)."""
        self._configure(self._netns, self._ifindex, raw=True)

    def _configure(self, netns: int, ifindex: int, raw: bool) -> None:
        self._netns, self._ifindex = netns, ifindex
        key, value = ctypes.c_uint32(0), (ctypes.c_uint64 * 3)(netns, ifindex | self._generation << 32, int(raw))
        if libbpf.lib().bpf_map_update_elem(self._config_fd, ctypes.byref(key), value, 0):
            raise OSError(ctypes.get_errno(), "pktassert_fate_config")

    def unwatch(self) -> None:
        self.watch(0, 0)

    def attach_netfilter(self, ns: Namespace) -> list[int]:
        """Hang the connection-state and NAT programs at ``ns``'s netfilter hooks: their link fds."""
        if not self.netfilter:
            return []
        fds: list[int] = []
        try:
            for name, hook, priority in NETFILTER:
                for pf in (netfilter_link.NFPROTO_IPV4, netfilter_link.NFPROTO_IPV6):
                    fds.append(netfilter_link.attach(ns, self._prog_fd(name), pf, hook, priority))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise ProgramError(f"pktassert's fate tracker cannot attach its netfilter programs: {e}") from None
        return fds

    def send_next(self, cookie: int, tag: int) -> None:
        """The next packet the raw socket with this cookie sends through the DUT's stack has this tag."""
        key, value = ctypes.c_uint32(0), (ctypes.c_uint64 * 2)(cookie, tag)
        if libbpf.lib().bpf_map_update_elem(self._out_fd, ctypes.byref(key), value, 0):
            raise OSError(ctypes.get_errno(), "pktassert_out")

    def attach_socket(self, sock: socket.socket) -> None:
        """Put the delivery filter on a test socket (it keeps every packet; a TCP listener's connections
        inherit it); where the kernel lacks bpf_cast_to_kern_ctx, the kprobe knows the socket by it."""
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.socket_fd)

    def close(self) -> None:
        lib = libbpf.lib()
        if self._mm is not None:
            del self.slots
            self._mm.close()
            self._mm = None
        while self._links:
            lib.bpf_link__destroy(self._links.pop())
        if self.obj:
            lib.bpf_object__close(self.obj)
            self.obj = None
