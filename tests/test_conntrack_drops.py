"""A packet a rule accepted and netfilter then dropped (conntrack failing to confirm its entry) is
not blamed on the accepting rule. Oracle: the kernel's own conntrack statistics in the DUT namespace
(/proc/net/stat/nf_conntrack: drop, insert_failed)."""

from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from pktassert import Ct, Fate
from pktassert.kernel.conntrack_stats import conntrack_stats

# Debian's nftables package (CI installs it): the example a workstation is told to start from.
WORKSTATION = Path("/usr/share/doc/nftables/examples/workstation.nft")
ECHO_RULE = ("icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, "
             "echo-reply, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, 148, 149 } accept")


@pytest.mark.skipif(not WORKSTATION.exists(), reason="needs Debian's nftables examples: apt-get install nftables")
@pytest.mark.nftables(str(WORKSTATION))
def test_a_conntrack_drop_names_conntrack_and_keeps_the_accepting_rule(dut, inject):
    before = conntrack_stats(dut.topology.dut.ns)
    # 100 identical echo requests at once: conntrack sees clashing new entries and fails to confirm some
    # (measured here: 7 of 100, every run).
    r = inject(IPv6(src="2001:db8::7", dst=dut.ip6) / ICMPv6EchoRequest(id=1, seq=1), count=100)
    after = conntrack_stats(dut.topology.dut.ns)
    dropped = [p for p in r if p.fate == Fate.NETFILTER_DROPPED]
    assert len(dropped) == after["insert_failed"] - before["insert_failed"] == after["drop"] - before["drop"]
    assert r.count(Fate.CONSUMED) == 100 - len(dropped)  # the others were answered by the stack
    for p in dropped:
        assert p.ct == Ct.NEW and "confirm_failed" in p.ct_status  # its connection, as conntrack held it
        assert p.rule is None and p.accepted_by == ECHO_RULE
        assert p.dropped_by == (f"conntrack, after the rule set accepted it (reason NETFILTER_DROP; in this inject() "
                                f"conntrack counted insert_failed {len(dropped)}, drop {len(dropped)})")
    answered = next(p for p in r if p.fate == Fate.CONSUMED)
    assert answered.rule == ECHO_RULE and answered.accepted_by is None and answered.dropped_by is None
    assert "confirm_failed" not in answered.ct_status
