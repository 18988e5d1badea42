"""The inspector's parsed fields, checked against frames sent through a real kernel."""

import ipaddress

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from pktassert import Verdict
from pktassert.instruments.record import const

PASS_ALL = "int pass_all(struct xdp_md *ctx) { return XDP_PASS; }"
DROP_ALL = "int drop_all(struct xdp_md *ctx) { return XDP_DROP; }"
TX_ALL = "int tx_all(struct xdp_md *ctx) { return XDP_TX; }"
ABORT_ALL = "int abort_all(struct xdp_md *ctx) { return XDP_ABORTED; }"
RETURN_7 = "int return_7(struct xdp_md *ctx) { return 7; }"

pytestmark = pytest.mark.xdp(PASS_ALL, func="pass_all")

SRC, SRC6 = "198.51.100.7", "2001:db8:1::7"
L2, L3, L4 = const("P_L2"), const("P_L3"), const("P_L4")
TRUNCATED, FRAGMENT, VLAN_MORE = const("P_TRUNCATED"), const("P_FRAGMENT"), const("P_VLAN_MORE")


def eth(xdp):
    return Ether(src=xdp.peer.mac, dst=xdp.mac)


def one(inject, pkt):
    """The record of a single injected frame."""
    cap = inject(pkt)
    assert len(cap) == 1
    return cap.records[0]


def addr(rec, field, version):
    return ipaddress.ip_address(bytes(rec[field][: 4 if version == 4 else 16]))


@pytest.mark.parametrize("flags", ["S", "SA", "FPU"])
def test_ipv4_tcp_fields(xdp, inject, flags):
    pkt = IP(src=SRC, dst=xdp.ip, ttl=42) / TCP(sport=40000, dport=443, flags=flags)
    rec = one(inject, pkt)
    assert addr(rec, "src", 4) == ipaddress.ip_address(SRC)
    assert addr(rec, "dst", 4) == ipaddress.ip_address(xdp.ip)
    assert not rec["src"][4:].any() and not rec["dst"][4:].any()   # IPv4 uses only the first 4 bytes
    assert (rec["l3"], rec["ttl"], rec["proto"]) == (4, 42, 6)
    assert (rec["sport"], rec["dport"]) == (40000, 443)             # host order: 40000 is not its own byte swap
    assert rec["tcp_flags"] == int(TCP(flags=flags).flags)
    # The 8-byte tag trailer is taken off before the filter runs, so it must not show in len.
    assert rec["len"] == len(bytes(eth(xdp) / pkt))
    assert rec["ifindex"] == xdp.ifindex
    assert rec["ethertype"] == 0x0800
    assert rec["parsed"] == L2 | L3 | L4
    assert rec["verdict"] == Verdict.PASS


def test_udp_ports(xdp, inject):
    rec = one(inject, IP(dst=xdp.ip) / UDP(sport=5353, dport=53) / b"query")
    assert (rec["proto"], rec["sport"], rec["dport"]) == (17, 5353, 53)
    assert rec["tcp_flags"] == 0 and rec["parsed"] & L4


def test_udp_without_payload(xdp, inject):
    pkt = IP(dst=xdp.ip) / UDP(sport=1, dport=65535)
    rec = one(inject, pkt)
    assert (rec["sport"], rec["dport"]) == (1, 65535)
    assert rec["len"] == 14 + 20 + 8
    assert not rec["parsed"] & TRUNCATED


def test_icmp_type_and_code(xdp, inject):
    rec = one(inject, IP(dst=xdp.ip) / ICMP(type=3, code=4))
    assert (rec["proto"], rec["icmp_type"], rec["icmp_code"]) == (1, 3, 4)
    assert (rec["sport"], rec["dport"]) == (0, 0)


def test_icmpv6_echo_and_ipv6_addresses(xdp, inject):
    rec = one(inject, IPv6(src=SRC6, dst=xdp.ip6, hlim=7) / ICMPv6EchoRequest())
    assert rec["l3"] == 6 and rec["ethertype"] == 0x86DD
    assert addr(rec, "src", 6) == ipaddress.ip_address(SRC6)
    assert addr(rec, "dst", 6) == ipaddress.ip_address(xdp.ip6)
    assert (rec["ttl"], rec["proto"], rec["icmp_type"], rec["icmp_code"]) == (7, 58, 128, 0)


def test_ipv6_extension_chain(xdp, inject):
    pkt = (IPv6(dst=xdp.ip6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
           / TCP(sport=1234, dport=8080, flags="S"))
    rec = one(inject, pkt)
    assert rec["proto"] == 6                       # the final next header, not hop-by-hop's 0
    assert (rec["sport"], rec["dport"], rec["tcp_flags"]) == (1234, 8080, 0x02)
    assert rec["parsed"] == L2 | L3 | L4


def test_ipv6_non_first_fragment(xdp, inject):
    rec = one(inject, IPv6(dst=xdp.ip6) / IPv6ExtHdrFragment(offset=10) / TCP(sport=1234, dport=80))
    assert rec["parsed"] & FRAGMENT
    # Bytes after a non-first fragment header are mid-payload, not a TCP header.
    assert not rec["parsed"] & L4
    assert (rec["sport"], rec["dport"], rec["tcp_flags"]) == (0, 0, 0)


def test_ipv6_first_fragment_has_ports(xdp, inject):
    rec = one(inject, IPv6(dst=xdp.ip6) / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=7, dport=9))
    assert not rec["parsed"] & FRAGMENT
    assert (rec["proto"], rec["sport"], rec["dport"]) == (17, 7, 9)


def test_ipv4_options_skipped(xdp, inject):
    pkt = IP(dst=xdp.ip, options=[IPOption_RR()]) / TCP(sport=2222, dport=22, flags="A")
    assert IP(bytes(pkt)).ihl > 5   # the test is void if scapy sent no options
    rec = one(inject, pkt)
    assert (rec["sport"], rec["dport"], rec["tcp_flags"]) == (2222, 22, 0x10)


def test_ipv4_non_first_fragment(xdp, inject):
    rec = one(inject, IP(dst=xdp.ip, frag=5) / UDP(sport=1000, dport=2000))
    assert rec["parsed"] & FRAGMENT and rec["parsed"] & L3
    assert not rec["parsed"] & L4
    assert (rec["proto"], rec["sport"], rec["dport"]) == (17, 0, 0)


def test_single_vlan(xdp, inject):
    rec = one(inject, eth(xdp) / Dot1Q(vlan=100) / IP(dst=xdp.ip) / UDP(dport=53))
    assert (rec["vlan_count"], rec["vlan_outer"], rec["vlan_inner"]) == (1, 100, 0)
    assert rec["ethertype"] == 0x0800 and rec["dport"] == 53


def test_qinq(xdp, inject):
    rec = one(inject, eth(xdp) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IPv6(dst=xdp.ip6) / TCP(dport=80))
    assert (rec["vlan_count"], rec["vlan_outer"], rec["vlan_inner"]) == (2, 10, 20)
    assert rec["ethertype"] == 0x86DD and rec["dport"] == 80
    assert not rec["parsed"] & VLAN_MORE


def test_three_vlan_tags(xdp, inject):
    rec = one(inject, eth(xdp) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / Dot1Q(vlan=30) / IP(dst=xdp.ip) / TCP())
    assert rec["parsed"] & VLAN_MORE
    assert (rec["vlan_count"], rec["vlan_outer"], rec["vlan_inner"]) == (2, 10, 20)
    assert rec["l3"] == 0 and not rec["parsed"] & L3   # the parser stops: it can't see past tag 3


def test_truncated_ipv4_header(xdp, inject):
    frame = bytes(eth(xdp) / IP(dst=xdp.ip) / TCP())[: 14 + 10]
    cap = inject(frame)
    rec = cap.records[0]
    assert rec["parsed"] & TRUNCATED and not rec["parsed"] & L3
    assert rec["len"] == 24
    assert cap.verdict == Verdict.PASS


def test_truncated_tcp_header(xdp, inject):
    frame = bytes(eth(xdp) / IP(src=SRC, dst=xdp.ip) / TCP(dport=80))[: 14 + 20 + 3]
    cap = inject(frame)
    rec = cap.records[0]
    assert rec["parsed"] & TRUNCATED and rec["parsed"] & L3 and not rec["parsed"] & L4
    assert addr(rec, "src", 4) == ipaddress.ip_address(SRC)   # what was parsed before the cut stays
    assert cap.verdict == Verdict.PASS


def test_ethernet_only_frame(xdp, inject):
    cap = inject(bytes(eth(xdp) / b"")[:12] + b"\x88\xb5")   # local experimental ethertype, no payload
    rec = cap.records[0]
    assert rec["len"] == 14 and rec["ethertype"] == 0x88B5
    assert rec["parsed"] == L2 and rec["l3"] == 0
    assert cap.verdict == Verdict.PASS


def odd_frames(xdp):
    e = eth(xdp)
    ip = IP(dst=xdp.ip)
    return [
        bytes(e / ip / TCP())[:24], bytes(e / ip / TCP())[:37], bytes(e)[:12] + b"\x08\x00",
        bytes(e)[:12] + b"\x86\xdd" + bytes(40)[:20], bytes(e / Dot1Q(vlan=5))[:16],
        e / ARP(pdst=xdp.ip), e / Dot1AD() / Dot1Q() / Dot1Q() / Dot1Q() / ip,
        ip / UDP(), IP(dst=xdp.ip, ihl=2) / TCP(), IP(dst=xdp.ip, frag=1) / ICMP(), IP(dst=xdp.ip, proto=47),
        IPv6(dst=xdp.ip6, nh=59), IPv6(dst=xdp.ip6) / IPv6ExtHdrFragment(offset=1) / UDP(),
        IPv6(dst=xdp.ip6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP(),
        IPv6(dst=xdp.ip6) / ICMPv6EchoRequest(), ip / ICMP(type=0) / (b"x" * 1400),
        ip / TCP(flags=0xFF), e / Dot1Q(vlan=4095) / IPv6(dst=xdp.ip6) / UDP(),
        bytes(e / IPv6(dst=xdp.ip6) / IPv6ExtHdrHopByHop() / TCP())[:14 + 40 + 4], e / (b"\x00" * 46),
    ]


def test_every_frame_gets_a_verdict(xdp, inject):
    frames = odd_frames(xdp)
    assert len(frames) == 20
    cap = inject(frames)
    assert len(cap) == 20
    assert list(cap.index) == list(range(20))
    assert cap.count(Verdict.PASS) == 20
    # The exact per-CPU counters must tell the same story as the records.
    assert xdp.counts()[Verdict.PASS] == 20
    assert sum(xdp.counts().values()) == 20


def test_no_stray_frames_in_a_flood(xdp, inject):
    pkt = IP(src=SRC, dst=xdp.ip) / UDP(sport=1, dport=9)
    cap = inject(pkt, count=2000, vary={"sport": (1024, 3023)})
    assert len(cap) == 2000
    assert np.array_equal(cap.records["sport"], np.arange(1024, 3024))   # records come back in send order
    assert sum(xdp.counts().values()) == 2000
    assert sum(xdp.stray_counts().values()) == 0


def mixed(xdp):
    return [
        IP(src=SRC, dst=xdp.ip) / TCP(sport=1111, dport=22, flags="S"),
        IP(src=SRC, dst=xdp.ip) / TCP(dport=80, flags="A"),
        IP(src="198.51.100.8", dst=xdp.ip) / UDP(dport=53),
        IP(src="203.0.113.9", dst=xdp.ip) / UDP(dport=123),
        IP(src="203.0.113.9", dst=xdp.ip) / ICMP(),
        IPv6(src=SRC6, dst=xdp.ip6) / TCP(dport=25, flags="S"),
        IPv6(src=SRC6, dst=xdp.ip6) / UDP(dport=53),
    ]


def test_where(xdp, inject):
    cap = inject(mixed(xdp))
    assert len(cap.where(TCP)) == 3
    assert list(cap.where(UDP, dport=53).index) == [2, 6]
    assert list(cap.where(IP, UDP, dport=53).index) == [2]
    assert list(cap.where(src=SRC).index) == [0, 1]
    assert list(cap.where(src=[SRC, SRC6]).index) == [0, 1, 5, 6]
    assert list(cap.where(IPv6).index) == [5, 6]
    assert list(cap.where(TCP, flags="S").index) == [0, 5]
    assert list(cap.where(dport=range(20, 30)).index) == [0, 5]
    assert list(cap.where(ICMP).index) == [4]
    assert cap.where(TCP, dport=53).count() == 0
    assert cap.where(UDP).count(Verdict.PASS) == 3


@pytest.mark.xdp(DROP_ALL, func="drop_all")
def test_drop_verdicts(xdp, inject):
    cap = inject(mixed(xdp))
    assert cap.verdicts == [Verdict.DROP] * 7
    assert xdp.counts() == {**{v: 0 for v in Verdict}, Verdict.DROP: 7}


@pytest.mark.xdp(TX_ALL, func="tx_all")
def test_tx_verdicts(xdp, inject):
    cap = inject(IP(dst=xdp.ip) / UDP(dport=9), count=50, vary={"sport": (1, 50)})
    assert cap.count(Verdict.TX) == 50
    # Bounced frames leave through the DUT's veth; none may come back in as extra frames.
    assert xdp.counts() == {**{v: 0 for v in Verdict}, Verdict.TX: 50}
    assert sum(xdp.stray_counts().values()) == 0


@pytest.mark.xdp(ABORT_ALL, func="abort_all")
def test_aborted_verdicts(xdp, inject):
    cap = inject(mixed(xdp))
    assert cap.verdicts == [Verdict.ABORTED] * 7
    assert cap.where(IPv6).count(Verdict.ABORTED) == 2
    assert xdp.counts() == {**{v: 0 for v in Verdict}, Verdict.ABORTED: 7}


@pytest.mark.xdp(RETURN_7, func="return_7")
def test_invalid_return_value(xdp, inject):
    cap = inject(mixed(xdp)[:3])
    assert cap.verdicts == [Verdict.ABORTED] * 3      # what the kernel does with it
    assert [o.ret for o in cap] == [7, 7, 7]             # what the filter returned
    assert xdp.counts()[Verdict.ABORTED] == 3
    assert xdp.tally().counters[const("CTR_TAGGED") + const("CTR_INVALID")] == 3


def test_where_a_zero_value_needs_the_layer_that_carries_it(xdp, inject):
    # A packet without the layer has 0 in that field's column; it must not match a query for 0.
    cap = inject([IP(dst=xdp.ip) / TCP(dport=22), IP(dst=xdp.ip) / ICMP(type=0)])
    assert len(cap.where(type=0)) == 1 and len(cap.where(ICMP, type=0)) == 1
    assert len(cap.where(sport=0)) == 0 and len(cap.where(flags=0)) == 0
