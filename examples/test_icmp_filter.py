"""The ICMP filter: echo, path MTU and neighbor discovery pass, echo requests up to a per-source rate."""

import ipaddress
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
)

from pktassert import Verdict

pytestmark = pytest.mark.xdp("icmp_filter.c", func="icmp_filter")

PASS, DROP = Verdict.PASS, Verdict.DROP


def test_icmp_types(xdp, inject):
    cases = [  # (type, code, verdict)
        (8, 0, PASS),    # echo request
        (0, 0, PASS),    # echo reply
        (3, 4, PASS),    # fragmentation needed
        (3, 1, DROP),    # host unreachable
        (3, 3, DROP),    # port unreachable
        (13, 0, DROP),   # timestamp
        (5, 1, DROP),    # redirect
        (11, 0, DROP),   # time exceeded
    ]
    result = inject([IP(dst=xdp.ip) / ICMP(type=t, code=c) for t, c, _ in cases])
    assert result.verdicts == [v for _, _, v in cases]
    assert result.where(ICMP, type=3, code=4).verdict == PASS


def test_echo_flood_limited_per_source(xdp, inject):
    flood = IP(src="198.51.100.7", dst=xdp.ip) / ICMP(type=8)
    result = inject(flood, count=1000, vary={"seq": (0, 999)})
    assert result.counts() == {"DROP": 900, "PASS": 100}
    # The budget goes to the first requests; every one after it is dropped.
    assert result.verdicts == [PASS] * 100 + [DROP] * 900
    after = inject([IP(src="198.51.100.8", dst=xdp.ip) / ICMP(type=8),    # another source: its own budget
                    IP(src="198.51.100.7", dst=xdp.ip) / ICMP(type=0)])    # replies are not budgeted
    assert after.verdicts == [PASS, PASS]
    assert xdp.counts()[DROP] == 900


def test_echo_budget_renews_each_window(xdp, inject):
    budget = xdp.map("echo_budget")
    now = time.monotonic_ns()   # the clock bpf_ktime_get_ns() reads
    for addr, start in (("198.51.100.7", now), ("198.51.100.8", now - 61 * 10**9)):
        key = ipaddress.ip_address(f"::ffff:{addr}").packed   # the filter's key: an IPv4-mapped address
        budget[key] = (start, 100)   # (window start, echoes used): spent, in this window and in one that has ended
    result = inject([IP(src=a, dst=xdp.ip) / ICMP(type=8) for a in ("198.51.100.7", "198.51.100.8")])
    assert result.verdicts == [DROP, PASS]


def test_icmpv6_types(xdp, inject):
    cases = [
        (ICMPv6EchoRequest(), PASS),
        (ICMPv6EchoReply(), PASS),
        (ICMPv6PacketTooBig(), PASS),
        (ICMPv6ND_RS(), PASS),
        (ICMPv6ND_RA(), PASS),
        (ICMPv6ND_NS(tgt=xdp.ip6), PASS),
        (ICMPv6ND_NA(tgt=xdp.peer.ip6), PASS),
        (ICMPv6ND_Redirect(tgt="2001:db8::3", dst="2001:db8:1::1"), DROP),
        (ICMPv6DestUnreach(), DROP),
        (ICMPv6TimeExceeded(), DROP),
    ]
    # Neighbor discovery is sent with hop limit 255 (RFC 4861).
    result = inject([IPv6(dst=xdp.ip6, hlim=255) / msg for msg, _ in cases])
    assert result.verdicts == [v for _, v in cases]
    assert result.where(IPv6, type=range(133, 137)).count(PASS) == 4


def test_neighbor_discovery_from_off_link_dropped(xdp, inject):
    # A router on the way would have lowered the hop limit: this was not sent on our link.
    spoofed = IPv6(src="2001:db8:5::1", dst=xdp.ip6, hlim=64) / ICMPv6ND_NA(tgt="2001:db8::2")
    assert inject(spoofed).verdict == DROP


def test_icmpv6_echo_flood_limited_per_64(xdp, inject):
    # 150 addresses from one /64 share one budget.
    flood = IPv6(dst=xdp.ip6) / ICMPv6EchoRequest()
    result = inject(flood, count=150, vary={"src": "2001:db8:7::/120"})
    assert result.verdicts == [PASS] * 100 + [DROP] * 50
    assert result.where(src="2001:db8:7::95").verdict == DROP   # the last, the 150th address
    assert inject(IPv6(src="2001:db8:8::1", dst=xdp.ip6) / ICMPv6EchoRequest()).verdict == PASS


def test_non_icmp_passes(xdp, inject):
    result = inject([IP(dst=xdp.ip) / TCP(dport=22, flags="S"), IP(dst=xdp.ip) / UDP(dport=53),
                     IPv6(dst=xdp.ip6) / TCP(dport=443, flags="S")])
    assert result.where(TCP).count(PASS) == 2
    assert result.count(PASS) == 3
