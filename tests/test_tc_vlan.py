"""tc and VLAN-tagged frames: the unit tier gives the verdict the kernel gives live.

Measured live (Linux 6.18, a veth): at tc INGRESS the receive path has taken the outer 802.1Q or
802.1ad tag out of the frame into the sk_buff (skb_vlan_untag: vlan_present 1, vlan_tci, vlan_proto),
the frame starts with the ethertype behind the tag, skb->protocol is that ethertype and skb->len is 4
bytes less; of two tags only the outer one goes. A tagged frame shorter than 20 bytes never reaches tc.
At tc EGRESS a frame the DUT sends from a packet socket keeps its tags (vlan_present 0, skb->protocol the
TPID), as a test run has it. BPF_PROG_TEST_RUN cannot set vlan_present/vlan_tci/vlan_proto: the unit
tier runs an ingress frame without its outer tag, and refuses tagged frames for a filter that reads those
fields or calls bpf_skb_vlan_push/pop.

The oracle is the live tier: every expectation below holds there too (each test runs in both tiers).
"""

import shutil
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from pktassert import TcVerdict
from pktassert.errors import InjectError

SOURCE = Path(__file__).parent / "libbpf" / "vlan_filters.bpf.c"
needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
BOTH = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
OK, SHOT, REDIRECT = TcVerdict.OK, TcVerdict.SHOT, TcVerdict.REDIRECT
LIVE_FIX = '@pytest.mark.parametrize("tier", ["live"], indirect=True)'

BCC_H_PROTO = """
int dns_by_h_proto(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP) return TC_ACT_OK;
    struct udphdr *u = (void *)ip + ip->ihl * 4;
    if ((void *)(u + 1) > end) return TC_ACT_OK;
    return u->dest == bpf_htons(53) ? TC_ACT_SHOT : TC_ACT_OK;
}
"""
BCC_VLAN_TCI = """
int drop_vlan_10(struct __sk_buff *skb) {
    return skb->vlan_present && (skb->vlan_tci & 0x0fff) == 10 ? TC_ACT_SHOT : TC_ACT_OK;
}
"""


def three(src: str, dst: str, ip: str) -> list:
    """Untagged, one 802.1Q tag, QinQ (802.1ad outside, 802.1Q inside): IPv4 UDP to port 53 each."""
    e = Ether(src=src, dst=dst)
    dns = IP(dst=ip) / UDP(dport=53)
    return [e / dns, e / Dot1Q(vlan=10) / dns, e / Dot1AD(vlan=20) / Dot1Q(vlan=30) / dns]


def to_dut(tc) -> list:
    return three(tc.peer.mac, tc.mac, tc.ip)


def assert_tag_fields(c, outer, inner, count, length) -> None:
    """What the tc inspector recorded: the same in both tiers."""
    assert c.records["vlan_outer"].tolist() == outer
    assert c.records["vlan_inner"].tolist() == inner
    assert c.records["vlan_count"].tolist() == count
    assert c.records["len"].tolist() == length
    assert c.records["ethertype"].tolist() == [0x0800] * len(outer)
    assert c.records["dport"].tolist() == [53] * len(outer) and c.records["l3"].tolist() == [4] * len(outer)


# -- ingress: the filter parses eth->h_proto ---------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("form", ["bcc", pytest.param("libbpf", marks=needs_clang)])
def test_ingress_h_proto_sees_the_frame_behind_the_outer_tag(request, tier, form):
    """Live the outer tag is gone before tc: Ether/Dot1Q/IP/UDP(53) is dropped as an untagged one is; of
    QinQ the inner tag stays, so the filter sees 0x8100 and lets it go."""
    request.node.add_marker(pytest.mark.tc(str(SOURCE) if form == "libbpf" else BCC_H_PROTO, func="dns_by_h_proto"))
    tc, inject = request.getfixturevalue("tc"), request.getfixturevalue("inject")
    c = inject(to_dut(tc))
    assert c.verdicts == [SHOT, SHOT, OK], c
    assert_tag_fields(c, [0, 10, 20], [0, 0, 30], [0, 1, 2], [42, 46, 50])
    assert tc.counts()[SHOT] == 2 and tc.counts()[OK] == 1
    # A flood of tagged frames (the traffic engine live, one batch of test runs in the unit tier).
    tagged = Ether(src=tc.peer.mac, dst=tc.mac) / Dot1Q(vlan=10) / IP(dst=tc.ip) / UDP(dport=53)
    f = inject(tagged, count=1000, vary={"sport": (1024, 2023), "dport": [53, 54]})
    assert f.count(SHOT) == 500 and f.count(OK) == 500
    assert set(f.records["vlan_outer"].tolist()) == {10} and set(f.records["len"].tolist()) == {46}
    ipv6 = Ether(src=tc.peer.mac, dst=tc.mac) / Dot1Q(vlan=7) / IPv6(dst=tc.ip6) / UDP(dport=53)
    assert inject(ipv6).verdict == (SHOT if form == "libbpf" else OK)  # the bcc form drops IPv4 DNS only


@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="dns_by_skb_protocol")
def test_ingress_skb_protocol_is_the_ethertype_behind_the_outer_tag(tc, inject):
    c = inject(to_dut(tc))
    assert c.verdicts == [SHOT, SHOT, OK], c
    assert_tag_fields(c, [0, 10, 20], [0, 0, 30], [0, 1, 2], [42, 46, 50])


@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="dns_through_tags")
def test_ingress_a_filter_that_walks_the_tags_itself(tc, inject):
    """Tags in the frame or in the sk_buff: such a filter decides the same; VLAN 666 is the innermost tag
    it can see in the frame (live: the inner one of QinQ, not the outer one the kernel took)."""
    e = Ether(src=tc.peer.mac, dst=tc.mac)
    web = IP(dst=tc.ip) / UDP(dport=80)
    c = inject([*to_dut(tc), e / Dot1Q(vlan=666) / web, e / Dot1AD(vlan=5) / Dot1Q(vlan=666) / web,
                e / Dot1AD(vlan=666) / Dot1Q(vlan=5) / web])
    assert c.verdicts == [SHOT, SHOT, SHOT, OK, SHOT, OK], c


@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="remark_dns")
def test_the_frame_a_filter_sends_keeps_its_tag(tc, inject):
    """The filter rewrites the frame behind the tag and sends it back out: the frame that leaves carries
    the outer tag again (live the sk_buff keeps it and the peer's stack gets it as VLAN 10; pktassert's
    receiver on the peer, an XDP program, sees the frame without it, as XDP on a veth does)."""
    c = inject(to_dut(tc))
    assert c.verdicts == [REDIRECT, REDIRECT, OK], c
    sent = to_dut(tc)[1]
    remarked = Ether(bytes(sent))
    remarked[IP].tos, remarked[IP].chksum = 46 << 2, None
    if tc.tier == "unit":
        assert bytes(c[1].output) == bytes(Ether(bytes(remarked))), Ether(bytes(c[1].output)).show(dump=True)
        assert bytes(c[2].output) == bytes(to_dut(tc)[2])  # not changed: as sent, both tags
        run = tc.run(sent)
        assert run.verdict == REDIRECT and run.data == bytes(Ether(bytes(remarked)))
    else:
        got = [p for p in tc.received_by_peer() if UDP in p and p[UDP].dport == 53]
        assert len(got) == 2 and all(bytes(p[IP]) == bytes(Ether(bytes(remarked))[IP]) for p in got), got


# -- ingress: what a test run cannot show --------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("form", ["bcc", pytest.param("libbpf", marks=needs_clang)])
def test_a_filter_reading_the_sk_buff_s_tag(request, tier, form):
    """Live the filter reads the tag from the sk_buff; a test run cannot set it (it would read 0): the unit
    tier refuses tagged frames for this filter, naming the field and the live tier, and runs untagged ones."""
    src = str(SOURCE) if form == "libbpf" else BCC_VLAN_TCI
    request.node.add_marker(pytest.mark.tc(src, func="drop_vlan_10"))
    tc, inject = request.getfixturevalue("tc"), request.getfixturevalue("inject")
    frames = to_dut(tc)
    if tier == "live":
        assert inject(frames).verdicts == [OK, SHOT, OK]
        return
    assert inject(frames[0]).verdict == OK
    with pytest.raises(InjectError) as e:
        inject(frames)
    msg = str(e.value)
    assert not isinstance(e.value, OSError)
    assert msg.startswith("packet #1 is VLAN-tagged (802.1Q, VLAN 10), and drop_vlan_10() reads skb->vlan_present"), msg
    assert "at tc ingress the kernel takes the outer tag out of the frame into the sk_buff" in msg
    assert "a test run (BPF_PROG_TEST_RUN) cannot set them" in msg and LIVE_FIX in msg, msg
    with pytest.raises(InjectError, match=r"^packet #0 is VLAN-tagged \(802.1ad, VLAN 20\), and drop_vlan_10\(\)"):
        tc.run(frames[2])
    with pytest.raises(InjectError, match=r"VLAN-tagged .* drop_vlan_10\(\) reads skb->vlan_present"):
        inject(frames[1], count=100, vary={"sport": (1, 100)})


@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="pop_then_dns")
def test_a_filter_that_pops_the_tag(tc, inject):
    """bpf_skb_vlan_pop() takes live the tag the kernel keeps in the sk_buff, and of QinQ moves the inner
    one out of the frame into the sk_buff too (so the filter then sees IPv4 behind it); a test run has no
    tag in the sk_buff to take: refused for tagged frames in the unit tier."""
    frames = to_dut(tc)
    if tc.tier == "live":
        assert inject(frames).verdicts == [SHOT, SHOT, SHOT]
        return
    assert inject(frames[0]).verdict == SHOT
    with pytest.raises(InjectError, match=r"^packet #1 is VLAN-tagged \(802.1Q, VLAN 10\), and pop_then_dns\(\) calls "
                                          r"bpf_skb_vlan_pop\(\)"):
        inject(frames)


@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="dns_by_h_proto")
def test_a_tagged_frame_too_short_to_untag(tc, inject):
    """The kernel drops a tagged frame with less than 6 bytes behind the Ethernet header before tc
    (skb_vlan_untag; measured on a veth with the frame as crafted): the unit tier says so instead of
    running it. From 20 bytes it reaches tc."""
    head = bytes(Ether(src=tc.peer.mac, dst=tc.mac, type=0x8100))
    twenty = head + b"\x00\x0a\x08\x00\x45\x00"
    if tc.tier == "live":
        assert inject(twenty).verdict == OK
        return
    with pytest.raises(InjectError, match=r"^packet #0, a 19-byte VLAN-tagged frame, is one tc ingress never gets: "
                                          r"the kernel drops a tagged frame with less than 6 bytes behind its "
                                          r"Ethernet header .* Fix: a frame of 20 bytes or more.$"):
        inject(head + b"\x00\x0a\x08\x00\x45")
    # 20 bytes: the kernel's test run refuses what is left behind the tag, an IPv4 frame cut in its header.
    with pytest.raises(InjectError, match=r"^the kernel refused packet #0 \(VLAN-tagged: run without its outer tag, as "
                                          r"tc ingress gets it\), a 16-byte IPv4 frame .* this one has 2 bytes of it"):
        inject(twenty)


# -- egress: the frame keeps its tags ---------------------------------------------------------------------------

@BOTH
@needs_clang
@pytest.mark.parametrize("func, verdicts", [("dns_by_h_proto", [SHOT, OK, OK]), ("dns_by_skb_protocol", [SHOT, OK, OK]),
                                            ("dns_through_tags", [SHOT, SHOT, SHOT]), ("drop_vlan_10", [OK, OK, OK])])
def test_egress_frames_keep_their_tags(request, tier, func, verdicts):
    """What the DUT sends through tc egress is the frame as sent, tags and all (vlan_present 0): the unit
    tier runs it as it is, and a filter reading the sk_buff's tag reads 0 in both tiers."""
    request.node.add_marker(pytest.mark.tc(str(SOURCE), func=func, direction="egress"))
    tc, inject = request.getfixturevalue("tc"), request.getfixturevalue("inject")
    c = inject.from_dut(three(tc.mac, tc.peer.mac, tc.peer.ip))
    assert c.verdicts == verdicts, c
    assert_tag_fields(c, [0, 10, 20], [0, 0, 30], [0, 1, 2], [42, 46, 50])


# -- cost(): a frame the kernel refuses ------------------------------------------------------------------------

@BOTH
@needs_clang
@pytest.mark.tc(str(SOURCE), func="dns_by_h_proto")
def test_cost_of_a_frame_the_kernel_refuses(tc):
    """cost() runs the filter alone by BPF_PROG_TEST_RUN in either tier: a frame the kernel refuses is the
    unit tier's InjectError (why, and the fix), never a raw OSError."""
    cut = bytes(Ether(src=tc.peer.mac, dst=tc.mac, type=0x0800)) + b"\x45\x00\x00\x1c\x00\x01"
    with pytest.raises(InjectError) as e:
        tc.cost(cut, repeat=10)
    assert not isinstance(e.value, OSError)
    assert str(e.value).startswith("the kernel refused the packet, a 20-byte IPv4 frame (EtherType 0x0800), for a tc "
                                   "test run (BPF_PROG_TEST_RUN: Invalid argument): it takes an IPv4 frame only with "
                                   "its whole 20-byte IPv4 header"), str(e.value)
    assert tc.cost(IP(dst=tc.ip) / UDP(dport=53), repeat=10).ns_per_packet >= 0
