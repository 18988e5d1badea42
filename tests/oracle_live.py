"""The oracle's other side (tests/test_oracle.py), live tier: a BPF program loaded alone (tests/oracle_unit.py)
and attached ALONE, with nothing of pktassert's between it and the kernel, to say what the kernel does with
each frame.

- ``run_live``: the program attached alone in namespaces of our own (XDP on the DUT end of a veth, tc
  through a clsact qdisc with pyroute2), the frames sent from the other end (or, tc egress, from the DUT)
  by an AF_PACKET socket, and sniffed where what the program let through arrives: each frame's fate,
  PASS (and the frame as it arrived), TX (and the frame that came back), or GONE.

Everything happens in two anonymous namespaces made here (netns.Namespace: held by file descriptors,
gone with them); the root namespace is never touched; no address is configured at all (IPv6 is off in
both namespaces, so neither stack sends anything of its own).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import platform
import select
import socket
import struct
import time
from collections.abc import Sequence

from oracle_unit import XDP, Alone, OracleError

from pktassert.netns import Namespace
from pktassert.netns.topology import DUT_MAC, PEER_MAC

ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, PACKET_OUTGOING = 0x0003, 263, 8, 4
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
SO_RCVBUFFORCE, SO_MARK, PACKET_STATISTICS = 33, 36, 6
CLSACT_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
NR_BPF = {"x86_64": 321, "aarch64": 280}
DUT_IFINDEX = 2                                # dut0: the first link in a fresh namespace (lo is 1)
QUIET_S, DEADLINE_S = 0.15, 5.0                # sniffing stops after this long without a frame (bounded)


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
                ns.gro_off(name)
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
