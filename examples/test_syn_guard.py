"""The SYN-flood guard: a per-source budget of SYNs to port 80, then drops."""

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Verdict

pytestmark = pytest.mark.xdp("syn_guard.c", func="syn_guard")


def test_syn_flood_dropped(xdp, inject):
    flood = IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S")
    result = inject(flood, count=5000, vary={"sport": (1024, 65535)})
    assert len(result) == 5000                       # every injected packet has a verdict
    assert result.count(Verdict.PASS) <= 64          # the guard's per-source budget
    assert result.where(TCP, dport=80).count(Verdict.DROP) >= 4936


def test_established_traffic_passes(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=80, flags="A")).verdict == Verdict.PASS
