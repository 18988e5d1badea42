"""Which rule decided, for an inject() of as many packets as are traced (65,536) through several rules:
no raw error, every packet its rule; and when the kernel drops trace events, a message naming that cause."""

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Fate, PktassertError
from pktassert.observers import nft_trace

SIX_RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy accept;
    udp dport 1 counter accept
    udp dport 2 counter accept
    udp dport 3 counter accept
    udp dport 4 counter accept
    ip saddr 198.51.100.0/24 counter
    udp dport 53 counter drop
  }
}
"""


@pytest.mark.nftables(SIX_RULES)
def test_as_many_packets_as_are_traced_each_get_their_rule(dut, inject):
    n = nft_trace.MOST
    r = inject(IP(src="198.51.100.7", dst=dut.ip) / UDP(dport=53), count=n, vary={"sport": (0, n - 1)})
    assert r.count(Fate.NETFILTER_DROPPED) == n
    assert dut.nft.counters()["udp dport 53 counter drop"] == n  # the rule's own counter
    assert {p.rule for p in r} == {"udp dport 53 counter drop"}


@pytest.mark.nftables(SIX_RULES)
def test_lost_trace_events_are_said_not_guessed(dut, inject, monkeypatch):
    monkeypatch.setattr(nft_trace, "RCVBUF", 4096)  # a buffer the kernel overflows at once (the tracer is made below)
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=2000)
    assert r.count(Fate.NETFILTER_DROPPED) == 2000  # fates stay exact
    with pytest.raises(PktassertError, match=r"the kernel dropped nftables trace events during this inject\(\) of "
                                             r"2,000 packets \(its trace socket's buffer overflowed\)"):
        r[0].rule
