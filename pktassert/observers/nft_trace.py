"""Which nftables rule decided each packet: nftables' own tracing (``meta nftrace set 1`` in a
netdev ingress chain of pktassert's on the DUT's veth, before any of the rule set's chains), its
trace events read from the netfilter netlink group in the DUT namespace and parsed by libnftnl
(what ``nft monitor trace`` uses; on Debian's 1.0.6 that command prints text only).

A trace event carries no tag: its ID is a keyed hash the kernel does not reveal. Events are
matched to packets by the header bytes nftables copies into them (network header, then up to 20
bytes of the transport header), packets with equal bytes in the order they arrived (one veth
queue, one CPU: the order they were sent). A packet without a match gets no rule, never a guess."""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import functools
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pktassert.errors import HostLacks
from pktassert.frames.convert import l3_offset
from pktassert.kernel.conntrack_stats import conntrack_stats, rose
from pktassert.netns import Namespace
from pktassert.programs.nft_ruleset import OURS, RuleSet

NETLINK_NETFILTER, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE = 12, 270, 1, 9
SO_RCVBUFFORCE = 33
RCVBUF = 64 << 20  # the trace events of a chunk of a flood (CHUNK packets, gathered after each) fit twice over
CHUNK = 4096  # packets sent between two reads of the trace events (~8 events of ~1 KB each a packet)
TABLE = OURS[0]
MOST = 65536  # packets per inject() call traced; larger floods have fates but no rule (tracing costs ~µs each)
# enum nftnl_trace_attr (libnftnl/trace.h)
CHAIN, FAMILY, ID, TABLE_ATTR, TYPE, RULE_HANDLE, VERDICT, POLICY = 0, 1, 2, 12, 13, 14, 15, 17
NETWORK_HEADER, TRANSPORT_HEADER = 10, 11
RULE, POLICY_TYPE = 3, 1  # enum nft_trace_types
NF_DROP, NF_ACCEPT = 0, 1
TERMINAL = {0: "drop", 1: "accept", 2: "stolen", 3: "queue"}


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("nftnl") or "libnftnl.so.11")
    except OSError as e:
        raise HostLacks("libnftnl", f"which rule decided needs libnftnl ({e}). Fix: apt-get install libnftnl11 "
                                    f"(nftables depends on it).") from None
    lib.nftnl_trace_alloc.restype = ctypes.c_void_p
    lib.nftnl_trace_free.argtypes = [ctypes.c_void_p]
    lib.nftnl_trace_nlmsg_parse.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.nftnl_trace_is_set.argtypes, lib.nftnl_trace_is_set.restype = [ctypes.c_void_p, ctypes.c_uint16], ctypes.c_bool
    lib.nftnl_trace_get_str.argtypes, lib.nftnl_trace_get_str.restype = [ctypes.c_void_p, ctypes.c_uint16], ctypes.c_char_p
    lib.nftnl_trace_get_u32.argtypes, lib.nftnl_trace_get_u32.restype = [ctypes.c_void_p, ctypes.c_uint16], ctypes.c_uint32
    lib.nftnl_trace_get_u64.argtypes, lib.nftnl_trace_get_u64.restype = [ctypes.c_void_p, ctypes.c_uint16], ctypes.c_uint64
    lib.nftnl_trace_get_data.argtypes = [ctypes.c_void_p, ctypes.c_uint16, ctypes.POINTER(ctypes.c_uint32)]
    lib.nftnl_trace_get_data.restype = ctypes.c_void_p
    return lib


@dataclass
class Event:
    id: int
    table: str
    chain: str
    family: int
    type: int
    handle: int | None
    verdict: int | None
    headers: bytes


Decision = tuple[str, str, bool]  # chain, rule (or "policy drop"), whether it accepted the packet


def _parse(message: bytes) -> Event | None:
    lib = _lib()
    t = lib.nftnl_trace_alloc()
    try:
        buf = ctypes.create_string_buffer(message, len(message))
        if lib.nftnl_trace_nlmsg_parse(buf, t) < 0:
            return None

        def data(attr: int) -> bytes:
            if not lib.nftnl_trace_is_set(t, attr):
                return b""
            n = ctypes.c_uint32()
            p = lib.nftnl_trace_get_data(t, attr, ctypes.byref(n))
            return ctypes.string_at(p, n.value) if p else b""

        def u32(attr: int) -> int | None:
            return int(lib.nftnl_trace_get_u32(t, attr)) if lib.nftnl_trace_is_set(t, attr) else None

        kind = u32(TYPE) or 0
        verdict = u32(VERDICT) if kind != POLICY_TYPE else u32(POLICY)
        return Event(u32(ID) or 0, (lib.nftnl_trace_get_str(t, TABLE_ATTR) or b"").decode(),
                     (lib.nftnl_trace_get_str(t, CHAIN) or b"").decode(), u32(FAMILY) or 0, kind,
                     int(lib.nftnl_trace_get_u64(t, RULE_HANDLE)) if lib.nftnl_trace_is_set(t, RULE_HANDLE) else None,
                     None if verdict is None else ctypes.c_int32(verdict).value,
                     data(NETWORK_HEADER) + data(TRANSPORT_HEADER))
    finally:
        lib.nftnl_trace_free(t)


FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


class Tracer:
    """Trace events of the DUT namespace, for the rule set under test."""

    def __init__(self, ns: Namespace, ruleset: RuleSet, ifname: str) -> None:
        self.ruleset, self.ns = ruleset, ns
        self.sock = ns.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        self.sock.setblocking(False)
        self._pending: list[Event] = []
        self.lost = False  # the kernel dropped events: the socket's buffer overflowed
        self._conntrack: dict[str, int] = {}
        ruleset.nft(f"add table netdev {TABLE}")
        ruleset.nft(f"add chain netdev {TABLE} pktassert_in {{ type filter hook ingress device {ifname} priority -1000; }}")
        self.on = False

    def switch(self, on: bool) -> None:
        if on != self.on:
            self.ruleset.nft(f"add rule netdev {TABLE} pktassert_in meta nftrace set 1" if on
                             else f"flush chain netdev {TABLE} pktassert_in")
            self.on = on

    def start(self) -> None:
        """Before an inject(): what earlier traffic left is not its; conntrack's counters as they are."""
        self.events()
        self._pending, self.lost = [], False
        self._conntrack = conntrack_stats(self.ns)

    def gather(self) -> None:
        """Take the events so far (between the chunks of a flood), so the socket's buffer keeps up."""
        self._pending += self.events()

    def conntrack_rose(self) -> dict[str, int]:
        """What conntrack counted (drop, insert_failed, ...) since start()."""
        return rose(self._conntrack, conntrack_stats(self.ns))

    def events(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.lost = True  # some events are gone; the socket goes on with the next ones
                continue
            at = 0
            while at + 16 <= len(data):
                size = int.from_bytes(data[at:at + 4], "little")
                if size < 16:
                    break
                e = _parse(data[at:at + size])
                if e is not None:
                    out.append(e)
                at += (size + 3) & ~3

    def decide(self, frames: Sequence[bytes], reached: np.ndarray | None) -> list[Decision | None] | None:
        """Per packet (frames in send order, from the Ethernet header): (chain, rule, accepted) that
        decided it, as nft prints them, or None (not traced, no event matched it, or it never reached
        the stack: ``reached`` says which did; None: not known, so no packet is given a rule). None
        for all when the kernel dropped trace events (then no match can be trusted)."""
        evs_all = self._pending + self.events()
        self._pending = []
        if self.lost:
            return None
        # A trace ID is a hash of the sk_buff's address and flow: two identical packets one after the
        # other can share it. Our rule's event (one per packet, first, at the veth's ingress) starts
        # each packet's trace; our chain's other events (its policy) are not the rule set's.
        traces: list[list[Event]] = []
        current: dict[int, list[Event]] = {}
        for e in evs_all:
            if e.table == TABLE:
                if e.type == RULE and e.handle is not None:
                    current[e.id] = [e]
                    traces.append(current[e.id])
            elif e.id in current:
                current[e.id].append(e)
        queues: dict[bytes, collections.deque[list[Event]]] = collections.defaultdict(collections.deque)
        for trace in traces:  # in the order packets came in
            headers = _within_ip(next((e.headers for e in trace if e.headers), b""))
            if headers:
                queues[headers].append(trace)
        rules = self.ruleset.rules() if traces else {}
        lengths = {len(h) for h in queues}
        out: list[Decision | None] = []
        for i, frame in enumerate(frames):
            if reached is None or not reached[i]:  # its identical successor's trace is not its own
                out.append(None)
                continue
            evs = _take(queues, lengths, frame)
            out.append(None if evs is None else _decision(evs, rules))
        return out

    def close(self) -> None:
        self.sock.close()


def _within_ip(headers: bytes) -> bytes:
    """The copied headers up to the IP datagram's end: at the DUT's ingress (our chain's event) a short
    packet's copy runs on into pktassert's trailer, which IP input trims later and no sent frame has."""
    if len(headers) >= 4 and headers[0] >> 4 == 4:
        return headers[:int.from_bytes(headers[2:4], "big")]
    if len(headers) >= 6 and headers[0] >> 4 == 6:
        return headers[:40 + int.from_bytes(headers[4:6], "big")]
    return headers


def _take(queues: dict[bytes, collections.deque[list[Event]]], lengths: set[int], frame: bytes) -> list[Event] | None:
    l3 = frame[l3_offset(frame):]
    for n in lengths:
        q = queues.get(l3[:n])
        if q:
            return q.popleft()
    return None


def _decision(evs: list[Event], rules: dict[tuple[str, str, int], str]) -> Decision | None:
    """The event that dropped it, else the last that let it go on."""
    decisive = [e for e in evs if e.verdict in TERMINAL and e.type in (RULE, POLICY_TYPE) and e.table != TABLE]
    if not decisive:
        return None
    e = next((e for e in decisive if e.verdict != NF_ACCEPT), decisive[-1])
    family = FAMILIES.get(e.family, str(e.family))
    chain = f"{family} {e.table} {e.chain}"
    accepted = e.verdict == NF_ACCEPT
    if e.type == POLICY_TYPE:
        return chain, f"policy {TERMINAL[e.verdict or 0]}", accepted
    return chain, rules.get((family, e.table, e.handle or 0), f"handle {e.handle}"), accepted

