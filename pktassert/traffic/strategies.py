"""Hypothesis strategies for packets: ``packets(template, vary=...)`` over the fields inject(vary=) varies,
each packet built by the same flood builder (so the very bytes inject() would send), and ``frames()``,
over packet structure: VLAN tags, IPv4 or IPv6 with extension headers, tunnels, TCP/UDP/ICMP.

    from hypothesis import find
    bad = find(packets(IP(dst=DUT_IP) / TCP(), vary={"dport": (0, 65535)}),
               lambda p: dut.inject(p).verdict != expected(p))   # shrunk to the one port that shows it
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from pktassert.errors import InjectError
from pktassert.frames.checksums import on_purpose
from pktassert.frames.convert import complete
from pktassert.frames.flood import Flood
from pktassert.netns import UNIT_DUT, UNIT_PEER
from pktassert.traffic.boundaries import boundaries, edges
from pktassert.traffic.source import Traffic

# boundaries() and edges() are here too: `from pktassert import strategies as st; st.boundaries(...)`.
__all__ = ["Traffic", "boundaries", "edges", "frames", "landmarks", "packets"]

MARKS = 16  # most aligned boundaries (multiples of one power of two) taken from a range, per power
# ICMP types a filter is likely to tell apart (echo reply, unreachable, redirect, echo, time exceeded,
# parameter problem, timestamp); ICMPv6 messages likewise, as scapy's classes (ND ones with hop limit 255).
ICMP_TYPES = (0, 3, 5, 8, 11, 12, 13)
ICMPV6 = (ICMPv6EchoRequest, ICMPv6EchoReply, ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded,
          ICMPv6ParamProblem, ICMPv6ND_NS, ICMPv6ND_NA)
TCP_FLAGS = ("S", "SA", "A", "PA", "FA", "F", "R", "RA", "", "FSRPAUEC")
# IPv6 extension headers in RFC 8200's order (4.1): hop-by-hop first, the fragment header after routing.
EXTENSIONS = (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, IPv6ExtHdrFragment)
SOURCES4 = ("198.51.100.0/24", "203.0.113.0/24")  # documentation ranges (RFC 5737) for drawn sources
SOURCES6 = ("2001:db8:1::/64",)                  # and RFC 3849's
VXLAN_PORT = 4789
ND = (ICMPv6ND_NS, ICMPv6ND_NA)  # the kernel takes neighbour discovery only with hop limit 255 (RFC 4861)


def packets(template: Packet | bytes, vary: Mapping[str, Any] | None = None) -> SearchStrategy[Ether]:
    """Packets like ``template`` with the ``vary`` fields drawn: each one the frame
    ``inject(template, count=1, vary={field: [value], ...})`` sends (the topology's addresses where the
    template leaves them unset, checksums recomputed), as a dissected ``Ether``.

    ``vary`` takes what inject(vary=) takes: an inclusive ``(lo, hi)`` range, a list or range of values,
    an address prefix (``"198.51.100.0/24"``), one value, or a hypothesis strategy of values. A range
    also draws, half the time, the values filters draw edges at (its ends, round decimal numbers,
    powers of two, aligned address boundaries, and one either side of each): an off-by-one at port
    2000 is found in a few hundred examples, not tens of thousands. Shrinking goes toward the start
    of a range and the first value of a list."""
    base = _template(template)
    if vary is not None and not isinstance(vary, Mapping):
        raise InjectError(f"packets(vary={vary!r}): a {type(vary).__name__}. Fix: a dict of field names to values, "
                          f"as inject(vary=) takes: {{'dport': (1, 65535), 'IP.src': '198.51.100.0/24'}}.")
    given = dict(vary or {})
    # Names and specs checked now, with inject(vary=)'s own messages; a strategy's values when drawn
    # (a probe value that fits any such field stands in for it here, so its name is checked too).
    probes = {"payload": b"", "size": len(base)}
    Flood(base, 1, {k: probes.get(k, 0) if isinstance(v, SearchStrategy) else v for k, v in given.items()})
    draws = {name: _values(base, name, spec) for name, spec in given.items()}
    quick = _quick(base, given)
    return st.fixed_dictionaries(draws).map(lambda values: _frame(quick, values))


def _template(template: Any) -> Packet:
    """The template completed as inject() completes it (both tiers' endpoints have the same addresses)."""
    if isinstance(template, (bytes, bytearray)):
        return Ether(bytes(template))
    if not isinstance(template, Packet):
        raise InjectError(f"packets(template={template!r}): a {type(template).__name__}, not a packet. Fix: a scapy "
                          f"packet (IP(dst=...)/TCP()) or frame bytes.")
    return complete(template, UNIT_PEER, UNIT_DUT)


def _quick(base: Packet, vary: Mapping[str, Any]) -> Packet:
    """The template each draw's flood is built from: the same frame dissected, which the flood builder
    reads ~4x faster than a packet made in scapy, where that changes nothing: the same checksums kept
    as given (on_purpose), and no size or payload drawn (a dissected payload may be read as a protocol)."""
    dissected = base.__class__(bytes(base))
    same = "size" not in vary and "payload" not in vary and on_purpose(dissected) == on_purpose(base)
    return dissected if same else base


def _frame(base: Packet, values: Mapping[str, Any]) -> Ether:
    """The one frame inject(base, vary={name: [value]}) sends."""
    return Ether(Flood(base, 1, {name: [v] for name, v in values.items()}).frame(0))


def _values(base: Packet, name: str, spec: Any) -> SearchStrategy[Any]:
    """A strategy for one field's values (already checked against the field by Flood)."""
    if isinstance(spec, SearchStrategy):
        return spec
    if name == "payload" or name == "size" and not _pair(spec):
        return _listed(spec)
    if isinstance(spec, str) and "/" in spec:
        net = ipaddress.ip_network(spec, strict=False)
        first = int(net.network_address)
        return _ranged(first, first + net.num_addresses - 1, decimal=False)
    if _pair(spec):
        if name == "size":
            return _ranged(int(spec[0]), int(spec[1]), decimal=True)
        lo, hi = (_number(base, name, v) for v in spec)
        return _ranged(lo, hi, decimal=_kind(base, name) == "int")
    return _listed(spec)


def _pair(spec: Any) -> bool:
    return isinstance(spec, tuple) and len(spec) == 2


def _listed(spec: Any) -> SearchStrategy[Any]:
    """One value, or one of a list's (shrinking toward the first)."""
    if isinstance(spec, (list, tuple, range)):
        return st.sampled_from(list(spec))
    return st.just(spec)


def _number(base: Packet, name: str, value: Any) -> int:
    """``value`` of field ``name`` as the flood builder writes it (an address as its number)."""
    flood = Flood(base, 1, {name: [value]})
    _, field, _ = flood.fields[0]
    return int.from_bytes(flood.first[0, field.at:field.at + field.width].tobytes(), "big")


def _kind(base: Packet, name: str) -> str:
    return str(Flood(base, 1, {name: 0}).fields[0][1].kind)


def _ranged(lo: int, hi: int, decimal: bool) -> SearchStrategy[int]:
    """Any value of lo..hi, or one at an edge a filter is likely to draw (see ``landmarks``)."""
    marks = landmarks(lo, hi, decimal)
    whole = st.integers(lo, hi)
    return whole | st.sampled_from(marks) if marks else whole


def landmarks(lo: int, hi: int, decimal: bool = True) -> list[int]:
    """Values of lo..hi where filters tend to draw edges, and one either side of each: the ends, aligned
    boundaries (at most MARKS multiples of a power of two), and for numbers (not addresses) powers of
    two and round decimal numbers (1..9 times a power of ten). Sorted, so the smallest comes first."""
    marks = {lo, hi}
    for bits in range(hi.bit_length(), 0, -1):
        step = 1 << bits
        first = -(-lo // step) * step
        if (hi - first) // step + 1 > MARKS:
            break
        marks.update(range(first, hi + 1, step))
    if decimal:
        marks.update(1 << b for b in range(hi.bit_length()))
        marks.update(d * 10 ** k for k in range(1, len(str(hi))) for d in range(1, 10))
    return sorted({m + e for m in marks for e in (-1, 0, 1) if lo <= m + e <= hi})


def frames(dst: str | None = None, dst6: str | None = None, *, max_payload: int = 64) -> SearchStrategy[Packet]:
    """Packets of many shapes, to the DUT (``dst``/``dst6``: another destination): 0, 1 or 2 VLAN tags
    (802.1Q, 802.1ad outside), IPv4 or IPv6 (hop-by-hop, destination options, routing and fragment
    extension headers), maybe a tunnel (IP-in-IP, GRE, VXLAN over UDP/4789), then TCP, UDP, ICMP or ICMPv6
    with drawn ports, flags and types, and a payload of up to ``max_payload`` bytes. Every address is
    set (the topology's MACs, documentation-range sources): building one asks the host nothing."""
    if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 0:
        raise InjectError(f"frames(max_payload={max_payload!r}): give the most payload bytes, a whole number from 0.")
    for name, value, version in (("dst", dst, 4), ("dst6", dst6, 6)):
        if value is not None and not _is_address(value, version):
            raise InjectError(f"frames({name}={value!r}): not an IPv{version} address. Fix: e.g. "
                              f"{name}={(UNIT_DUT.ip if version == 4 else UNIT_DUT.ip6)!r}.")
    return _frame_shapes(dst or UNIT_DUT.ip, dst6 or UNIT_DUT.ip6, max_payload)


def _is_address(value: object, version: int) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == version
    except ValueError:
        return False


def _addresses(peer: str, ranges: tuple[str, ...]) -> SearchStrategy[str]:
    """The peer's address (shrunk to), or one of the documentation ranges'."""
    nets = [ipaddress.ip_network(r) for r in ranges]
    inside = st.one_of([st.integers(int(n.network_address), int(n.broadcast_address)) for n in nets])
    return st.just(peer) | inside.map(lambda n: str(ipaddress.ip_address(n)))


# Built once: a strategy made per draw costs more than the draw.
PORT = _ranged(0, 65535, decimal=True)
SRC4, SRC6 = _addresses(UNIT_PEER.ip, SOURCES4), _addresses(UNIT_PEER.ip6, SOURCES6)
TTL, VLAN, BYTE32 = st.integers(1, 255), st.integers(1, 4094), st.integers(0, 2**32 - 1)
TUNNELS = st.sampled_from((None, "ipip", "gre", "vxlan"))
EXTENSION_SETS = st.integers(0, 2 ** len(EXTENSIONS) - 1)


@st.composite
def _frame_shapes(draw: Any, dst: str, dst6: str, max_payload: int) -> Packet:
    """One frame: its layers drawn outside in, linked once at the end."""
    chain: list[Packet] = [Ether(src=UNIT_PEER.mac, dst=UNIT_DUT.mac)]
    tags = draw(st.integers(0, 2))
    if tags == 2:
        chain.append(Dot1AD(vlan=draw(VLAN)))
    if tags:
        chain.append(Dot1Q(vlan=draw(VLAN), prio=draw(st.integers(0, 7))))
    six = draw(st.booleans())
    tunnel = draw(TUNNELS)
    inner_six = draw(st.booleans()) if tunnel else six
    l4 = _l4(draw, inner_six)
    nd = isinstance(l4, ND)  # the innermost IPv6 header then has hop limit 255
    chain += _ip(draw, six, dst6 if six else dst, outer=True, nd=nd and not tunnel)
    if tunnel == "gre":
        chain.append(GRE())
    elif tunnel == "vxlan":
        chain += [UDP(sport=draw(st.integers(49152, 65535)), dport=VXLAN_PORT),
                  VXLAN(flags=0x08, vni=draw(st.integers(0, 2**24 - 1))), Ether(src=UNIT_PEER.mac, dst=UNIT_DUT.mac)]
    if tunnel:
        chain += _ip(draw, inner_six, dst6 if inner_six else dst, outer=False, nd=nd)
    chain.append(l4)
    if max_payload:
        chain.append(Raw(draw(st.binary(max_size=max_payload))))
    for outer, inner in zip(chain[-2::-1], chain[:0:-1]):  # innermost first: add_payload links, `/` would copy
        outer.add_payload(inner)
    return chain[0]


def _ip(draw: Any, six: bool, dst: str, outer: bool, nd: bool = False) -> list[Packet]:
    """An IP header from a drawn source; an outer IPv6 one with drawn extension headers after it."""
    if not six:
        return [IP(src=draw(SRC4), dst=dst, ttl=draw(TTL))]
    out: list[Packet] = [IPv6(src=draw(SRC6), dst=dst, hlim=255 if nd else draw(TTL))]
    if outer:
        present = draw(EXTENSION_SETS)  # one draw for all four (a bit each): fewer draws, faster examples
        for bit, ext in enumerate(EXTENSIONS):
            if present >> bit & 1:
                more = {"m": draw(st.integers(0, 1)), "id": draw(BYTE32)} if ext is IPv6ExtHdrFragment else {}
                out.append(ext(**more))
    return out


def _l4(draw: Any, six: bool) -> Packet:
    proto = draw(st.sampled_from(("tcp", "udp", "icmp")))
    if proto == "tcp":
        return TCP(sport=draw(PORT), dport=draw(PORT), flags=draw(st.sampled_from(TCP_FLAGS)))
    if proto == "udp":
        return UDP(sport=draw(PORT), dport=draw(PORT))
    if six:
        return draw(st.sampled_from(ICMPV6))()
    return ICMP(type=draw(st.sampled_from(ICMP_TYPES)), code=draw(st.integers(0, 15)))
