"""Checksums of flood rows, recomputed in numpy where scapy would compute them, layer by layer.

The plan (which bytes each checksum sums, where it goes) is made once from the template; applying
it to a chunk of rows is a few numpy sums per checksum, however many rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR, IPOption_SSRR
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    _ICMPv6,
    _IPv6ExtHdr,
)
from scapy.layers.l2 import GRE
from scapy.packet import NoPayload, Packet

Key = tuple[type, int]  # a layer: its class, and which one of that class it is from the outside (from 1)

PLAIN = None  # no pseudo-header: the layer and its payload alone
# Layers whose checksum scapy computes: (field, its offset in the layer, pseudo-header protocol).
# Exact classes: scapy's IPerror/TCPerror (an ICMP error's quote) are subclasses, and are left alone.
CHECKSUMS: dict[type, tuple[str, int, int | None]] = {
    TCP: ("chksum", 16, 6),
    UDP: ("chksum", 6, 17),
    ICMP: ("chksum", 2, PLAIN),
    GRE: ("chksum", 4, PLAIN),
    _ICMPv6: ("cksum", 2, 58),  # every ICMPv6 message class
}
ONLY_IF: dict[type, str] = {GRE: "chksum_present"}  # the field scapy checks before it computes the checksum
UDP_ZERO = 17  # a computed UDP checksum of 0 is sent as 0xFFFF (0 means "none")
# Routing headers whose address is the final destination in the pseudo-header while segments are
# left (scapy's in6_pseudoheader): which address, and where the addresses start in the header.
FINAL_DST6: dict[type, tuple[int, int]] = {IPv6ExtHdrRouting: (-1, 8), IPv6ExtHdrSegmentRouting: (0, 8)}
SOURCE_ROUTES = (IPOption_LSRR, IPOption_SSRR)  # IPv4: the last router is the final destination


def layers(pkt: Packet) -> list[tuple[Packet, int, Key]]:
    """Each layer of ``pkt`` (a built, dissected packet) with its offset and key, outermost first."""
    out: list[tuple[Packet, int, Key]] = []
    seen: dict[type, int] = {}
    total, layer = len(pkt), pkt
    while not isinstance(layer, NoPayload):
        seen[type(layer)] = n = seen.get(type(layer), 0) + 1
        out.append((layer, total - len(layer), (type(layer), n)))
        layer = layer.payload
    return out


@dataclass(frozen=True)
class Job:
    """One checksum: the 2 bytes at ``field`` from the bytes ``start``..``end`` and a pseudo-header."""

    key: Key
    name: str
    field: int
    start: int
    end: int  # one past the last byte summed, in the template
    to_row_end: bool  # when sizes vary, the row's own end instead
    addrs: tuple[tuple[int, int], ...] = ()  # pseudo-header addresses: (offset, width)
    proto: int | None = PLAIN

    def compute(self, rows: np.ndarray, ends: np.ndarray | None) -> np.ndarray:
        if ends is not None and self.to_row_end:  # the bytes after each row's end are zero: they add nothing
            stop, s = ends.astype(np.uint64), _sum16(rows[:, self.start:])
        else:
            stop, s = np.full(len(rows), self.end, np.uint64), _sum16(rows[:, self.start:self.end])
        if self.proto is not PLAIN:
            for at, width in self.addrs:
                s = s + _sum16(rows[:, at:at + width])
            s = s + np.uint64(self.proto) + (stop - np.uint64(self.start))
        csum = _fold(s)
        if self.proto == UDP_ZERO:
            csum[csum == 0] = 0xFFFF
        return csum


def _spec(layer: Packet) -> tuple[str, int, int | None] | None:
    spec = CHECKSUMS.get(type(layer)) or (CHECKSUMS[_ICMPv6] if isinstance(layer, _ICMPv6) else None)
    flag = ONLY_IF.get(type(layer))
    return None if flag and not getattr(layer, flag) else spec


def _jobs(pkt: Packet) -> list[Job]:
    """Every checksum scapy computes in ``pkt`` (built and dissected), innermost first: an outer one
    (a GRE or tunnel's UDP checksum) sums the inner ones, so they must be right before it."""
    found, size, jobs = layers(pkt), len(pkt), []
    for i, (layer, at, key) in enumerate(found):
        if type(layer) is IP:
            jobs.append(Job(key, "chksum", at + 10, at, at + layer.ihl * 4, False))
            continue
        spec = _spec(layer)
        if spec is None:
            continue
        name, off, proto = spec
        below = i - 1  # the IP header it rides on, through IPv6 extension headers only
        while below >= 0 and isinstance(found[below][0], _IPv6ExtHdr):
            below -= 1
        net, net_at, _ = found[max(below, 0)]
        if below < 0 or type(net) not in (IP, IPv6) or (proto == 58 and type(net) is not IPv6):
            continue  # scapy would not compute it either (no IP under it), or it is an ICMP error's quote
        addrs = _pseudo(found[below:i], net_at) if proto is not PLAIN else ()
        jobs.append(Job(key, name, at + off, at, _end(net, net_at, size), True, addrs, proto))
    return sorted(jobs, key=lambda j: -j.start)


def _end(net: Packet, at: int, size: int) -> int:
    """Where the IP packet ends: its length field says (a zero one, as in jumbograms, means the frame's end)."""
    length = net.len if type(net) is IP else net.plen and net.plen + 40
    return at + length if length else size


def _pseudo(chain: list[tuple[Packet, int, Key]], net_at: int) -> tuple[tuple[int, int], ...]:
    """(offset, width) of the pseudo-header's source and final destination."""
    net = chain[0][0]
    if type(net) is IP:
        dst = net_at + 16
        routes, opt_at = [], net_at + 20
        for opt in net.options:
            if isinstance(opt, SOURCE_ROUTES):
                routes.append((opt, opt_at))
            opt_at += len(bytes(opt))
        if len(routes) == 1 and routes[0][0].routers:  # pointer, length, type, then the routers
            dst = routes[0][1] + 3 + 4 * (len(routes[0][0].routers) - 1)
        return (net_at + 12, 4), (dst, 4)
    dst = net_at + 24
    for hdr, at, _ in reversed(chain[1:]):  # the routing header nearest the upper layer counts
        which = FINAL_DST6.get(type(hdr))
        if which and hdr.segleft != 0 and hdr.addresses:
            index, first = which
            dst = at + first + 16 * (index % len(hdr.addresses))
            break
    return (net_at + 8, 16), (dst, 16)


def on_purpose(pkt: Packet) -> frozenset[Key]:
    """The checksums the template set itself, to be kept as given in every row.

    A layer the test built in scapy: the field was given. A layer dissected from bytes (inject()
    passes the template as a frame) or given as raw bytes: its value is not the one scapy computes,
    so it cannot have been scapy's (a given value that happens to be right is recomputed).
    """
    built = pkt.__class__(bytes(pkt))
    given = {key: layer for layer, _, key in layers(pkt)}
    row = np.frombuffer(bytes(built), np.uint8)[None, :]
    kept = set()
    for job in _jobs(built):  # innermost first: an outer checksum was computed over the inner ones as given
        layer = given.get(job.key)
        if layer is not None and not layer.original:
            if layer.fields.get(job.name) is not None:  # chksum=None asks scapy to compute it
                kept.add(job.key)
        else:
            zeroed = row.copy()
            zeroed[0, job.field:job.field + 2] = 0
            if int(job.compute(zeroed, None)[0]) != int.from_bytes(row[0, job.field:job.field + 2], "big"):
                kept.add(job.key)
    return frozenset(kept)


class Checksums:
    """The checksums of a template, recomputed in rows of it; those in ``kept`` stay as they are."""

    def __init__(self, built: Packet, kept: frozenset[Key] = frozenset()) -> None:
        self.jobs = [j for j in _jobs(built) if j.key not in kept]

    def apply(self, rows: np.ndarray, ends: np.ndarray | None = None) -> None:
        """In place. ``ends``: each row's frame length, when they differ (the bytes after it are zero)."""
        for job in self.jobs:
            rows[:, job.field:job.field + 2] = 0
            rows[:, job.field:job.field + 2] = job.compute(rows, ends).astype(">u2").view(np.uint8).reshape(-1, 2)


def _sum16(cols: np.ndarray) -> np.ndarray:
    """Sum of each row's 16-bit big-endian words (an odd last byte padded with zero)."""
    odd = cols.shape[1] % 2
    words = cols[:, :cols.shape[1] - odd].view(">u2")  # rows are contiguous: no copy
    s = words.sum(axis=1, dtype=np.uint64)
    if odd:
        s += cols[:, -1].astype(np.uint64) << np.uint64(8)
    return s


def _fold(s: np.ndarray) -> np.ndarray:
    while (s >> np.uint64(16)).any():
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return (~s) & np.uint64(0xFFFF)
