"""The SYN-flood guard: a per-source budget of SYNs to port 80, then drops."""

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Fate, Verdict

pytestmark = pytest.mark.xdp("syn_guard.c", func="syn_guard")


def test_syn_flood_dropped(xdp, inject):
    flood = IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S")
    result = inject(flood, count=5000, vary={"sport": (1024, 65535)})
    assert len(result) == 5000                       # every injected packet has a verdict
    assert result.count(Verdict.PASS) <= 64          # the guard's per-source budget
    assert result.where(TCP, dport=80).count(Verdict.DROP) >= 4936


def test_established_traffic_passes(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=80, flags="A")).verdict == Verdict.PASS


def test_million_spoofed_syns_hit_the_budget(xdp, inject):
    # 1,000,000 SYNs from 256 spoofed sources: each source gets its budget of 64, the rest is dropped.
    flood = IP(dst=xdp.ip) / TCP(dport=80, flags="S")
    r = inject(flood, count=1_000_000, vary={"src": "198.51.100.0/24", "sport": (1024, 65535)})
    assert r.sent == 1_000_000 and r.accounted == 1_000_000
    assert r.count(Verdict.PASS) == 256 * 64
    assert r.count(Verdict.DROP) > 980_000


def test_flood_never_reaches_the_app(dut, inject):
    # Through the whole stack: of 100,000 spoofed SYNs, only each source's budget reaches the
    # listening socket; the rest the guard dropped before the stack saw them.
    dut.listen(tcp=80)
    r = inject(IP(dst=dut.ip) / TCP(dport=80, flags="S"), count=100_000, vary={"src": "198.51.100.0/24"})
    assert r.count(Fate.DELIVERED) <= 256 * 64
    assert r.count(Fate.FILTER_DROPPED) == r.count(Verdict.DROP) >= 100_000 - 256 * 64
