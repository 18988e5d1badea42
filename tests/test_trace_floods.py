"""Which rule decided, for an inject() of more packets than were once traced (65,536) through several
rules: no raw error, every packet its rule; and nothing of the trace is queued for Python to read."""

import socket

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Fate

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
def test_more_packets_than_were_once_traced_each_get_their_rule(dut, inject):
    n = 65_536 + 4096
    r = inject(IP(src="198.51.100.7", dst=dut.ip) / UDP(dport=53), count=n, vary={"sport": (0, 65535)})
    assert r.count(Fate.NETFILTER_DROPPED) == n
    assert dut.nft.counters()["udp dport 53 counter drop"] == n  # the rule's own counter
    assert {p.rule for p in r} == {"udp dport 53 counter drop"}
    assert r.rule_counts() == {("inet fw input", "udp dport 53 counter drop"): n}


@pytest.mark.nftables(SIX_RULES)
def test_the_trace_events_are_taken_in_the_kernel_and_none_is_queued(dut, inject):
    # Each event is taken into its packet's record by the trace socket's filter as it is sent: none waits
    # on the socket (where a flood's events once overflowed its buffer and were lost).
    r = inject(IP(src="198.51.100.7", dst=dut.ip) / UDP(dport=1), count=2000)
    assert r.rule_counts() == {("inet fw input", "udp dport 1 counter accept"): 2000}
    tracer = dut.nft_tracer()
    assert tracer is not None
    with pytest.raises(BlockingIOError):
        tracer.sock.recv(65536, socket.MSG_DONTWAIT)
