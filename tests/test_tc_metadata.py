"""A tc filter sees exactly the XDP metadata it would see without pktassert: none, or what the XDP
filter under test wrote. pktassert's tag must not show there (the pattern of the kernel's own
test_xdp_meta.c: a tc program that reads what XDP put in front of the frame)."""

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Fate, TcVerdict

BOTH_TIERS = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)

# Without an XDP program that writes metadata, there is none: data_meta == data.
NO_META_EXPECTED = """
int no_meta(struct __sk_buff *skb) {
    void *meta = (void *)(long)skb->data_meta;
    void *data = (void *)(long)skb->data;
    return meta < data ? TC_ACT_SHOT : TC_ACT_OK;
}
"""

# The XDP filter under test writes 4 bytes of metadata; its tc program wants exactly those.
XDP_WRITES_META = """
int write_meta(struct xdp_md *ctx) {
    if (bpf_xdp_adjust_meta(ctx, -4))
        return XDP_ABORTED;
    __u32 *meta = (void *)(long)ctx->data_meta;
    if ((void *)(meta + 1) > (void *)(long)ctx->data)
        return XDP_ABORTED;
    *meta = 0xC0FFEE;
    return XDP_PASS;
}
"""
TC_READS_META = """
int read_meta(struct __sk_buff *skb) {
    __u32 *meta = (void *)(long)skb->data_meta;
    if ((void *)(meta + 1) > (void *)(long)skb->data)
        return TC_ACT_SHOT;   /* fewer than the 4 bytes XDP wrote */
    return *meta == 0xC0FFEE ? TC_ACT_OK : TC_ACT_SHOT;
}
"""


@BOTH_TIERS
@pytest.mark.tc(NO_META_EXPECTED, func="no_meta")
def test_a_tc_filter_alone_sees_no_metadata(tc, inject):
    r = inject(IP(dst=tc.ip) / UDP(dport=53), count=20)
    assert r.count(TcVerdict.OK) == 20


@pytest.mark.tc(NO_META_EXPECTED, func="no_meta")
def test_nor_with_the_whole_stack(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=20)
    assert r.count(TcVerdict.OK) == 20
    # A closed port: the stack frees each with NO_SOCKET, answering the first few (ICMP errors are rate
    # limited per destination); every fate is known.
    assert r.reasons() == {"NO_SOCKET": 20} and r.count(Fate.UNKNOWN) == 0
    assert r.count(Fate.ANSWERED) + r.count(Fate.DROPPED) == 20 and r[0].answer == "ICMP 3/3"


@pytest.mark.xdp(XDP_WRITES_META, func="write_meta")
@pytest.mark.tc(TC_READS_META, func="read_meta")
def test_a_tc_filter_sees_exactly_what_the_xdp_filter_wrote(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=20)
    assert [p.stages["tc"] for p in r] == [TcVerdict.OK] * 20
    # the XDP filter's own metadata no longer hides a packet's fate (UNKNOWN before)
    assert r.reasons() == {"NO_SOCKET": 20} and r.count(Fate.UNKNOWN) == 0 and r[0].answer == "ICMP 3/3"
