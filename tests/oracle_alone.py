"""The oracle's other side (tests/test_oracle.py): a BPF program run ALONE, with nothing of pktassert's
between it and the kernel, to say what the kernel does with each frame.

- ``load_object``: a BPF ELF object opened and loaded by libbpf itself (ctypes, our own typed handle),
  as a loader would: programs of the hook's type only, no map pinned, ``.rodata``/``.data`` globals
  written before load, maps sized before load. ``load_bcc``: a bcc source compiled alone by bcc.
- ``run_unit``: BPF_PROG_TEST_RUN, one frame at a time (repeat=1): (return value, frame out).
- ``run_live``: the program attached alone in namespaces of our own (XDP on the DUT end of a veth, tc
  through a clsact qdisc with pyroute2), the frames sent from the other end (or, tc egress, from the DUT)
  by an AF_PACKET socket, and sniffed where what the program let through arrives: each frame's fate,
  PASS (and the frame as it arrived), TX (and the frame that came back), or GONE.

Everything happens in two anonymous namespaces made here (netns.Namespace: held by file descriptors,
gone with them); the root namespace is never touched; no address is configured at all (IPv6 is off in
both namespaces, so neither stack sends anything of its own).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import functools
import os
import platform
import select
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pktassert.netns import Namespace
from pktassert.netns.topology import DUT_MAC, PEER_MAC

XDP, SCHED_CLS = 6, 3                          # BPF_PROG_TYPE_*
PROG_TYPES = {"xdp": XDP, "tc": SCHED_CLS}
SECTIONS = {"xdp": ("xdp",), "tc": ("tc", "classifier")}
BTF_KIND_VAR, BTF_KIND_DATASEC = 14, 15
DATA_SECTIONS = (".rodata", ".data", ".bss")
ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, PACKET_OUTGOING = 0x0003, 263, 8, 4
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
SO_RCVBUFFORCE, SO_MARK, PACKET_STATISTICS = 33, 36, 6
CLSACT_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
NR_BPF = {"x86_64": 321, "aarch64": 280}
DUT_IFINDEX = 2                                # dut0: the first link in a fresh namespace (lo is 1)
QUIET_S, DEADLINE_S = 0.15, 5.0                # sniffing stops after this long without a frame (bounded)


class OracleError(Exception):
    """The oracle itself could not say what the kernel did (never a verdict)."""


# --- libbpf, through ctypes --------------------------------------------------------------------------------

c_void_p, c_char_p, c_int, c_uint32, c_size_t = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
_SIGNATURES = {
    "libbpf_set_print": ([c_void_p], c_void_p),
    "bpf_object__open_mem": ([c_void_p, c_size_t, c_void_p], c_void_p),
    "bpf_object__load": ([c_void_p], c_int),
    "bpf_object__close": ([c_void_p], None),
    "bpf_object__btf": ([c_void_p], c_void_p),
    "bpf_object__next_program": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__next_map": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__find_map_by_name": ([c_void_p, c_char_p], c_void_p),
    "bpf_program__name": ([c_void_p], c_char_p),
    "bpf_program__section_name": ([c_void_p], c_char_p),
    "bpf_program__type": ([c_void_p], c_int),
    "bpf_program__set_type": ([c_void_p, c_int], c_int),
    "bpf_program__set_autoload": ([c_void_p, ctypes.c_bool], c_int),
    "bpf_program__fd": ([c_void_p], c_int),
    "bpf_map__name": ([c_void_p], c_char_p),
    "bpf_map__fd": ([c_void_p], c_int),
    "bpf_map__is_internal": ([c_void_p], ctypes.c_bool),
    "bpf_map__initial_value": ([c_void_p, ctypes.POINTER(c_size_t)], c_void_p),
    "bpf_map__set_max_entries": ([c_void_p, c_uint32], c_int),
    "bpf_map__set_pin_path": ([c_void_p, c_char_p], c_int),
    "btf__type_by_id": ([c_void_p, c_uint32], c_void_p),
    "btf__name_by_offset": ([c_void_p, c_uint32], c_char_p),
    "btf__find_by_name_kind": ([c_void_p, c_char_p, c_uint32], c_int),
    "bpf_map_update_elem": ([c_int, c_void_p, c_void_p, ctypes.c_uint64], c_int),
}
_QUIET = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)(lambda level, fmt, args: 0)


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


class _TestRunOpts(ctypes.Structure):   # libbpf's struct bpf_test_run_opts
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
                ("data_size_in", c_uint32), ("data_size_out", c_uint32),
                ("ctx_in", c_void_p), ("ctx_out", c_void_p), ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32),
                ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32),
                ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32)]


@functools.cache
def _test_run_fn():
    fn = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)["bpf_prog_test_run_opts"]
    fn.argtypes, fn.restype = [c_int, ctypes.POINTER(_TestRunOpts)], c_int
    return fn


@contextlib.contextmanager
def _quiet_libbpf() -> Iterator[None]:
    before = _lib().libbpf_set_print(ctypes.cast(_QUIET, c_void_p))
    try:
        yield
    finally:
        _lib().libbpf_set_print(before)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class _VarSecinfo(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


def _datasec_vars(btf: int, section: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of the variables in a DATASEC of the object's BTF."""
    lib = _lib()
    tid = lib.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
    if tid <= 0:
        return {}
    t = _BtfType.from_address(lib.btf__type_by_id(btf, tid))
    vlen = t.info & 0xFFFF
    base = lib.btf__type_by_id(btf, tid) + ctypes.sizeof(_BtfType)
    out = {}
    for i in range(vlen):
        info = _VarSecinfo.from_address(base + i * ctypes.sizeof(_VarSecinfo))
        var = _BtfType.from_address(lib.btf__type_by_id(btf, info.type))
        out[lib.btf__name_by_offset(btf, var.name_off).decode()] = (info.offset, info.size)
    return out


# --- programs loaded alone -----------------------------------------------------------------------------------

class Alone:
    """A program loaded alone: its fd, its hook, its maps by name."""

    hook: str
    fd: int

    def map_fd(self, name: str) -> int:
        raise NotImplementedError

    def update(self, name: str, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        if _lib().bpf_map_update_elem(self.map_fd(name), k, v, 0) != 0:
            err = ctypes.get_errno()
            raise OracleError(f"writing {name}[{key.hex()}] = {value.hex()} alone: {os.strerror(err)}")

    def close(self) -> None:
        raise NotImplementedError


class LibbpfAlone(Alone):
    def __init__(self, data: bytes, func: str, hook: str, globals_: Mapping[str, int | bytes] = (),
                 max_entries: Mapping[str, int] = ()) -> None:
        lib, self.hook = _lib(), hook
        self._data = ctypes.create_string_buffer(data, len(data))   # libbpf keeps pointers into it until load
        with _quiet_libbpf():
            self.obj = lib.bpf_object__open_mem(self._data, len(data), None)
        if not self.obj:
            raise OracleError(f"libbpf cannot open the object alone: {os.strerror(ctypes.get_errno())}")
        try:
            self._prepare(func, dict(globals_), dict(max_entries))
            with _quiet_libbpf():
                rc = lib.bpf_object__load(self.obj)
            if rc:
                raise OracleError(f"libbpf cannot load the object alone: {os.strerror(-rc)}")
        except BaseException:
            lib.bpf_object__close(self.obj)
            raise
        self.fd = lib.bpf_program__fd(self._entry)

    def _prepare(self, func: str, globals_: dict[str, int | bytes], sizes: dict[str, int]) -> None:
        lib, p, self._entry = _lib(), None, None
        while p := lib.bpf_object__next_program(self.obj, p):
            kind, section = lib.bpf_program__type(p), lib.bpf_program__section_name(p).decode()
            if kind == 0 and section.startswith(SECTIONS[self.hook]):   # a legacy section name ("xdp_foo")
                lib.bpf_program__set_type(p, PROG_TYPES[self.hook])
            elif kind != PROG_TYPES[self.hook]:
                lib.bpf_program__set_autoload(p, False)   # e.g. a kprobe beside the tc programs
            if func in (lib.bpf_program__name(p).decode(), section):
                self._entry = p
        if self._entry is None:
            raise OracleError(f"no program {func!r} in the object")
        m = None
        while m := lib.bpf_object__next_map(self.obj, m):
            lib.bpf_map__set_pin_path(m, None)   # LIBBPF_PIN_BY_NAME would pin in the host's bpffs
        for name, n in sizes.items():
            m = lib.bpf_object__find_map_by_name(self.obj, name.encode())
            if not m or lib.bpf_map__set_max_entries(m, n):
                raise OracleError(f"cannot size map {name!r} alone")
        btf = lib.bpf_object__btf(self.obj)
        placed = set()
        m = None
        while m := lib.bpf_object__next_map(self.obj, m):
            name = lib.bpf_map__name(m).decode()
            section = next((s for s in DATA_SECTIONS if name.endswith(s)), None)
            if not lib.bpf_map__is_internal(m) or section is None:
                continue
            size = c_size_t()
            addr = lib.bpf_map__initial_value(m, ctypes.byref(size))
            for var, (offset, width) in _datasec_vars(btf, section).items():
                if var in globals_:
                    value = globals_[var]
                    raw = value if isinstance(value, bytes) else int(value).to_bytes(width, "little", signed=value < 0)
                    if len(raw) != width or offset + width > size.value:
                        raise OracleError(f"global {var!r}: {len(raw)} bytes for a {width}-byte variable")
                    ctypes.memmove(addr + offset, raw, width)
                    placed.add(var)
        if set(globals_) - placed:
            raise OracleError(f"no globals {sorted(set(globals_) - placed)} in the object")

    def map_fd(self, name: str) -> int:
        m = _lib().bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise OracleError(f"no map {name!r} in the object")
        return _lib().bpf_map__fd(m)

    def close(self) -> None:
        if self.obj:
            _lib().bpf_object__close(self.obj)
            self.obj = None


# What a bcc source may use without including it: what pktassert's composition of a bcc filter includes
# before it (bpf/program.py), which is part of what "a bcc source" means there.
BCC_PRELUDE = ("#include <uapi/linux/bpf.h>\n#include <linux/if_ether.h>\n#include <linux/in.h>\n"
               "#include <linux/ip.h>\n#include <linux/ipv6.h>\n#include <linux/pkt_cls.h>\n")


class BccAlone(Alone):
    def __init__(self, source: Path, func: str, hook: str) -> None:
        from bcc import BPF

        self.hook = hook
        self.bpf = BPF(text=(BCC_PRELUDE + f'#line 1 "{source}"\n' + source.read_text()).encode())
        self.fd = self.bpf.load_func(func.encode(), BPF.XDP if hook == "xdp" else BPF.SCHED_CLS).fd

    def map_fd(self, name: str) -> int:
        return int(self.bpf[name.encode()].map_fd)

    def reset(self) -> None:
        """Every map of the source emptied (hash maps) or zeroed (arrays): fresh state without compiling
        it again, which takes bcc a second or more."""
        from bcc import libbcc

        lib = libbcc.lib
        lib.bpf_num_tables.argtypes, lib.bpf_num_tables.restype = [c_void_p], c_size_t
        lib.bpf_table_name.argtypes, lib.bpf_table_name.restype = [c_void_p, c_size_t], c_char_p
        for i in range(lib.bpf_num_tables(self.bpf.module)):
            self.bpf[lib.bpf_table_name(self.bpf.module, i)].clear()

    def close(self) -> None:
        self.bpf.cleanup()


def load_object(path: Path, func: str, hook: str, globals_: Mapping[str, int | bytes] = (),
                max_entries: Mapping[str, int] = ()) -> LibbpfAlone:
    return LibbpfAlone(Path(path).read_bytes(), func, hook, globals_, max_entries)


def load_bcc(source: Path, func: str, hook: str) -> BccAlone:
    return BccAlone(Path(source), func, hook)


# --- BPF_PROG_TEST_RUN, alone ---------------------------------------------------------------------------------

def skb_context(mark: int = 0, ingress_ifindex: int = 0) -> bytes:
    """The start of a struct __sk_buff for a tc test run: mark at 8, ingress_ifindex at 36 (uapi/linux/bpf.h,
    a stable ABI); the kernel takes a context shorter than the struct and zero-fills the rest."""
    ctx = bytearray(40)
    struct.pack_into("<I", ctx, 8, mark)
    struct.pack_into("<I", ctx, 36, ingress_ifindex)
    return bytes(ctx)


def run_unit(alone: Alone, frames: Sequence[bytes], ctx: bytes | None = None) -> list[tuple[int, bytes]]:
    """Each frame through the program by BPF_PROG_TEST_RUN: (its return value, signed; the frame it left)."""
    out = ctypes.create_string_buffer(1 << 17)
    ctx_buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    results = []
    for frame in frames:
        buf = ctypes.create_string_buffer(frame, len(frame))
        opts.data_in, opts.data_size_in = ctypes.addressof(buf), len(frame)
        opts.data_out, opts.data_size_out = ctypes.addressof(out), len(out)
        opts.ctx_in, opts.ctx_size_in = (ctypes.addressof(ctx_buf), len(ctx)) if ctx_buf is not None else (None, 0)
        opts.repeat, opts.retval = 1, 0
        if _test_run_fn()(alone.fd, ctypes.byref(opts)) != 0:
            err = ctypes.get_errno()
            raise OracleError(f"BPF_PROG_TEST_RUN alone refused a {len(frame)}-byte frame: {os.strerror(err)} "
                              f"({frame[:64].hex()})")
        results.append((ctypes.c_int32(opts.retval).value, out.raw[:opts.data_size_out]))
    return results


# --- attached alone, with sniffers -------------------------------------------------------------------------------

PASS, TX, GONE = "PASS", "TX", "GONE"


@dataclasses.dataclass(frozen=True)
class Fate:
    """What became of one frame on a real link: PASS (it reached the stack behind the program; ``frame``
    as it arrived there), TX (it came back out to the sender; ``frame`` as it came back), or GONE."""

    fate: str
    frame: bytes | None = None


def _xdp_pass_fd() -> int:
    """A 2-instruction XDP program (r0 = XDP_PASS; exit), loaded by the bpf syscall: the peer's veth needs
    one for frames the DUT's program sends back (XDP_TX) to be delivered at all."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    license_ = ctypes.create_string_buffer(b"GPL")
    code = ctypes.create_string_buffer(insns, len(insns))
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, XDP, 2, ctypes.addressof(code), ctypes.addressof(license_))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(NR_BPF[platform.machine()], 5, attr, 128)   # BPF_PROG_LOAD
    if fd < 0:
        raise OracleError(f"loading the peer's XDP_PASS program: {os.strerror(ctypes.get_errno())}")
    return int(fd)


class Link:
    """Two namespaces of our own and a veth pair between them: dut0 (DUT) and peer0 (peer), no
    addresses, IPv6 off, GRO off on both ends (so every frame arrives as it was sent, one by one)."""

    def __init__(self) -> None:
        self.namespaces: list[Namespace] = []
        try:
            self.dut_ns, self.peer_ns = self._namespace("dut"), self._namespace("peer")
            self.dut_ns.ipr.link("add", ifname="dut0", kind="veth", address=DUT_MAC,
                                 peer={"ifname": "peer0", "net_ns_fd": self.peer_ns.fd, "address": PEER_MAC})
            self.dut = self.dut_ns.ipr.link_lookup(ifname="dut0")[0]
            self.peer = self.peer_ns.ipr.link_lookup(ifname="peer0")[0]
            if self.dut != DUT_IFINDEX:   # what the unit tier's sk_buff says for ingress_ifindex
                raise OracleError(f"dut0 has ifindex {self.dut}, not {DUT_IFINDEX}")
            for ns, idx, name in ((self.dut_ns, self.dut, "dut0"), (self.peer_ns, self.peer, "peer0")):
                ns.ipr.link("set", index=idx, arp=False, state="up")
                self._gro_off(ns, name)
        except BaseException:
            self.close()
            raise

    def _namespace(self, role: str) -> Namespace:
        ns = Namespace(f"pktassert oracle {os.getpid()} {role}")
        self.namespaces.append(ns)
        if os.path.isdir("/proc/sys/net/ipv6"):
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", 1)
        return ns

    @staticmethod
    def _gro_off(ns: Namespace, ifname: str) -> None:
        from pyroute2.ethtool import Ethtool

        with ns.entered():
            ethtool = Ethtool()
            try:
                features = ethtool.get_features(ifname)
                features.features["rx-gro"].enable = False
                ethtool.set_features(ifname, features)
            finally:
                ethtool.close()

    def tx_dropped(self, end: str) -> int:
        """Frames a veth end could not hand to the other (a full XDP ring, the other end down): frames the
        link lost, which would look like drops by the program."""
        ns, idx = (self.dut_ns, self.dut) if end == "dut0" else (self.peer_ns, self.peer)
        return int(ns.ipr.get_links(index=idx)[0].get_attr("IFLA_STATS64")["tx_dropped"])

    def close(self) -> None:
        while self.namespaces:
            self.namespaces.pop().close()


def _sniffer(ns: Namespace, ifname: str, proto: int) -> socket.socket:
    s = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((ifname, proto))
    s.setblocking(False)
    return s


def _with_tag(data: bytes, ancdata: list) -> bytes:
    """The frame as it was on the wire: a VLAN tag the receive path moved into the sk_buff goes back in."""
    for level, kind, raw in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(raw) >= 20:
            status, _, _, _, _, tci, tpid = struct.unpack_from("<IIIHHHH", raw)
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                return data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    return data


# Sent after the frames, from a host no filter knows, to the DUT, in an EtherType none of them judges: when it
# has arrived, every frame before it has been through the program (one queue, in order). A program that drops
# it only costs the wait for quiet.
SENTINEL = bytes.fromhex(DUT_MAC.replace(":", "") + "02005e005342" + "88b5") + b"pktassert oracle: the last frame"


def _drain(socks: Sequence[socket.socket]) -> dict[socket.socket, list[bytes]]:
    """Every frame the sockets got (not the ones their own end sent): until the sentinel came and nothing
    else for a moment, or (without it) nothing came for QUIET_S; bounded by DEADLINE_S."""
    got: dict[socket.socket, list[bytes]] = {s: [] for s in socks}
    deadline, last, seen = time.monotonic() + DEADLINE_S, time.monotonic(), False
    while time.monotonic() < deadline and time.monotonic() - last < (0.03 if seen else QUIET_S):
        ready, _, _ = select.select(socks, [], [], 0.01)
        for s in ready:
            for _ in range(4096):   # bounded per wakeup
                try:
                    data, anc, _, addr = s.recvmsg(1 << 16, socket.CMSG_SPACE(32))
                except BlockingIOError:
                    break
                last = time.monotonic()
                if addr[2] == PACKET_OUTGOING:
                    continue
                if data == SENTINEL:
                    seen = True
                else:
                    got[s].append(_with_tag(data, anc))
    return got


def strip_outer_tag(frame: bytes) -> bytes:
    if len(frame) >= 18 and int.from_bytes(frame[12:14], "big") in (0x8100, 0x88A8):
        return frame[:12] + frame[16:]
    return frame


def _match(sent: Sequence[bytes], group: Sequence[int], received: Sequence[bytes]) -> dict[int, bytes]:
    """Which sent frame (indices ``group``, in send order) each received frame (in arrival order) is: the
    same bytes (frames are unique), or, for a frame the program changed, the one of the same length ahead
    that differs from it in the fewest bytes (the next one in order first, as most go through)."""
    where: dict[bytes, list[int]] = {}
    for k, i in enumerate(group):
        where.setdefault(sent[i], []).append(k)
    out: dict[int, bytes] = {}
    cursor = 0
    for r in received:
        hit = next((k for k in where.get(r, ()) if k >= cursor), None)
        if hit is None:
            def distance(k: int, r: bytes = r) -> int:
                return sum(a != b for a, b in zip(sent[group[k]], r))
            near = [k for k in range(cursor, min(len(group), cursor + 4)) if len(sent[group[k]]) == len(r)]
            close = [k for k in near if distance(k) <= 16]
            if close:
                hit = min(close, key=distance)
            else:
                ahead = [k for k in range(cursor, len(group)) if len(sent[group[k]]) == len(r)]
                if not ahead:
                    raise OracleError(f"a frame arrived that matches nothing sent: {r[:64].hex()}")
                hit = min(ahead, key=distance)
        out[group[hit]] = r
        cursor = hit + 1
    return out


def _send(sock: socket.socket, frames: Sequence[bytes]) -> None:
    for i, f in enumerate(frames):
        try:
            sock.send(f)
        except OSError as e:   # tc egress: a frame the filter dropped or redirected nowhere is an error here
            if e.errno not in (errno.ENOBUFS, errno.ENETDOWN, errno.ENXIO, errno.EPERM):
                raise
        if i % 64 == 63:
            time.sleep(0.0002)   # a veth's XDP ring holds 256 frames: let its NAPI keep up


def run_live(alone: Alone, frames: Sequence[bytes], direction: str = "ingress", mark: int = 0) -> list[Fate]:
    """The program attached alone on a real link; each frame's fate, in send order."""
    link = Link()
    peer_prog = -1
    try:
        dut_if, peer_if = "dut0", "peer0"
        if alone.hook == "xdp":
            peer_prog = _xdp_pass_fd()
            link.peer_ns.ipr.link("set", index=link.peer, xdp_fd=peer_prog)
            link.dut_ns.ipr.link("set", index=link.dut, xdp_fd=alone.fd)
        else:
            ipr = link.dut_ns.ipr
            ipr.tc("add", "clsact", link.dut)
            ipr.tc("add-filter", "bpf", link.dut, ":1", fd=alone.fd, name="oracle", parent=CLSACT_PARENT[direction],
                   classid=1, direct_action=True)
        sender = "dut0" if alone.hook == "tc" and direction == "egress" else "peer0"
        before = link.tx_dropped(sender)
        if alone.hook == "tc" and direction == "egress":
            # From the DUT itself: through clsact egress, out to the peer, where what left is sniffed.
            passed_socks = [_sniffer(link.peer_ns, peer_if, ETH_P_ALL)]
            groups = {passed_socks[0]: list(range(len(frames)))}
            expect = list(frames)
            tx_sock = None
            out = link.dut_ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            out.bind((dut_if, 0))
            if mark:
                out.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        elif alone.hook == "tc":
            # tc ingress: taps (ETH_P_ALL) see a frame before tc does; a socket bound to one EtherType on the
            # device is handed it after tc ingress, by the protocol the receive path found (after it moved the
            # outer VLAN tag into the sk_buff, where it is gone by then): one socket per such EtherType.
            expect = [strip_outer_tag(f) for f in frames]
            kinds: dict[int, list[int]] = {int.from_bytes(SENTINEL[12:14], "big"): []}
            for i, f in enumerate(expect):
                kinds.setdefault(int.from_bytes(f[12:14], "big"), []).append(i)
            if any(k < 0x0600 for k in kinds):
                raise OracleError("an 802.3 length field where an EtherType should be: not in the oracle's reach")
            socks = {k: _sniffer(link.dut_ns, dut_if, k) for k in kinds}
            passed_socks = list(socks.values())
            groups = {socks[k]: idx for k, idx in kinds.items()}
            tx_sock = None
            out = link.peer_ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            out.bind((peer_if, 0))
        else:
            passed_socks = [_sniffer(link.dut_ns, dut_if, ETH_P_ALL)]
            groups = {passed_socks[0]: list(range(len(frames)))}
            expect = list(frames)
            tx_sock = _sniffer(link.peer_ns, peer_if, ETH_P_ALL)
            out = link.peer_ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            out.bind((peer_if, 0))
        sniffers = passed_socks + ([tx_sock] if tx_sock is not None else [])
        try:
            _send(out, [*frames, SENTINEL])
            got = _drain(sniffers)
            lost = {"sniffers": sum(struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1] for s in sniffers),
                    f"{sender} tx_dropped": link.tx_dropped(sender) - before}
        finally:
            out.close()
            for s in sniffers:
                s.close()
        if any(lost.values()):
            raise OracleError(f"the oracle's own link lost frames ({lost}): its fates would not be the program's")
        fates = [Fate(GONE)] * len(frames)
        for s, idx in groups.items():
            for i, data in _match(expect, idx, got[s]).items():
                fates[i] = Fate(PASS, data)
        if tx_sock is not None:
            for i, data in _match(list(frames), list(range(len(frames))), got[tx_sock]).items():
                if fates[i].fate != GONE:
                    raise OracleError(f"frame #{i} both passed and came back")
                fates[i] = Fate(TX, data)
        return fates
    finally:
        link.close()   # the namespaces go, and the veth, qdisc and programs with them
        if peer_prog >= 0:
            os.close(peer_prog)
