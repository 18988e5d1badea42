"""Which rule decided a packet, when a filter stage in front of netfilter dropped some of the packets:
a packet the XDP or tc filter dropped never met a rule, and the next identical packet's trace is its own.
Oracle: the rule's own counter (nft) and the filters' verdicts."""

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Fate, TcVerdict, Verdict

RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy accept;
    udp dport 53 counter drop
  }
}
"""

# Drops the 1st and 3rd frame it sees (by a count in a map), passes the others.
XDP_ODD = """
BPF_ARRAY(seen, u64, 1);
int every_other(struct xdp_md *ctx) {
    int zero = 0;
    u64 *n = seen.lookup(&zero);
    if (!n)
        return XDP_ABORTED;
    u64 was = __sync_fetch_and_add(n, 1);
    return was % 2 == 0 ? XDP_DROP : XDP_PASS;
}
"""
TC_ODD = XDP_ODD.replace("struct xdp_md *ctx", "struct __sk_buff *ctx").replace("XDP_ABORTED", "TC_ACT_SHOT") \
    .replace("XDP_DROP", "TC_ACT_SHOT").replace("XDP_PASS", "TC_ACT_OK")
DNS = "udp dport 53 counter drop"


def _counted(dut) -> int:
    return sum(dut.nft.counters().values())


@pytest.mark.nftables(RULES)
@pytest.mark.xdp(XDP_ODD, func="every_other")
def test_a_packet_the_xdp_filter_dropped_is_given_no_rule(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=4)
    assert [p.verdict_enum() for p in r] == [Verdict.DROP, Verdict.PASS, Verdict.DROP, Verdict.PASS]
    assert _counted(dut) == 2  # the rule's own counter: two packets met it
    assert [p.fate for p in r] == [Fate.FILTER_DROPPED, Fate.NETFILTER_DROPPED] * 2
    assert [p.rule for p in r] == [None, DNS, None, DNS]


@pytest.mark.nftables(RULES)
@pytest.mark.tc(TC_ODD, func="every_other")
def test_a_packet_the_tc_filter_dropped_is_given_no_rule(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=4)
    assert [p.verdict_enum() for p in r] == [TcVerdict.SHOT, TcVerdict.OK, TcVerdict.SHOT, TcVerdict.OK]
    assert _counted(dut) == 2
    assert [p.rule for p in r] == [None, DNS, None, DNS]
