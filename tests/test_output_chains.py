"""What a DUT with a rule set and no filter of its own sends (inject.from_dut) goes through its stack: the
output and postrouting chains judge it, and each packet's fate says sent, or dropped by which rule.
Oracles: what arrived at the peer, and the rule's own nft counter."""

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Fate

OUTBOUND = """
table inet out {
  chain output {
    type filter hook output priority filter; policy accept;
    tcp dport 25 drop
  }
  chain postrouting {
    type filter hook postrouting priority filter; policy accept;
    ip daddr 198.51.100.66 counter drop
  }
}
"""


@pytest.mark.nftables(OUTBOUND)
def test_what_the_dut_sends_through_its_stack_meets_the_output_and_postrouting_chains(inject, dut):
    # A DUT with a rule set and no filter of its own: from_dut() sends from a raw socket in its namespace,
    # so the output and postrouting chains judge each packet; the peer's receiver is the oracle of SENT.
    r = inject.from_dut([IP(dst=dut.peer.ip) / TCP(sport=41000, dport=25, flags="S"),
                         IP(dst=dut.peer.ip) / TCP(sport=41001, dport=80, flags="S"),
                         IP(dst="198.51.100.66") / TCP(sport=41002, dport=80, flags="S")])
    assert [p.fate for p in r] == [Fate.NETFILTER_DROPPED, Fate.SENT, Fate.NETFILTER_DROPPED]
    assert [(p.chain, p.rule) for p in r] == [("inet out output", "tcp dport 25 drop"),
                                              ("inet out postrouting", "policy accept"),
                                              ("inet out postrouting", "ip daddr 198.51.100.66 counter drop")]
    assert r[0].reason == "NETFILTER_DROP"
    arrived = [p[TCP].sport for p in dut.received_by_peer() if TCP in p]
    assert arrived == [41001]
    assert dut.nft.counters()["ip daddr 198.51.100.66 counter drop"] == 1


@pytest.mark.nftables(OUTBOUND)
def test_a_flood_the_dut_sends_through_its_stack_has_every_packets_rule(inject, dut):
    r = inject.from_dut(IP(dst=dut.peer.ip) / TCP(dport=25, flags="S"), count=3000, vary={"dport": (24, 26)})
    assert r.fates() == {Fate.NETFILTER_DROPPED: 1000, Fate.SENT: 2000}
    assert r.rule_counts() == {("inet out output", "tcp dport 25 drop"): 1000,
                               ("inet out postrouting", "policy accept"): 2000}
    with pytest.raises(Exception, match="sk_buff the stack makes"):
        inject.from_dut(IP(dst=dut.peer.ip) / TCP(dport=25), mark=1)
