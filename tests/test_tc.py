"""tc classifiers under test: verdicts per packet in both tiers, bcc and libbpf, ingress and egress,
sk_buff fields in test runs, XDP and tc together on one DUT, floods through the traffic engine."""

import shutil

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import PktassertError, ProgramError, TcVerdict, Verdict
from pktassert.errors import InjectError
from pktassert.instruments.record import const

BCC = """
int port_guard(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP) return TC_ACT_OK;
    struct udphdr *u = (void *)ip + ip->ihl * 4;
    if ((void *)(u + 1) > end) return TC_ACT_OK;
    if (u->dest == bpf_htons(53) && skb->mark == 0) return TC_ACT_SHOT;
    return u->dest == bpf_htons(99) ? 3 : TC_ACT_OK;
}
"""
LIBBPF = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
SEC("tc")
int port_guard(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800)) return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != 17) return 0;
    struct udphdr *u = (void *)ip + ip->ihl * 4;
    if ((void *)(u + 1) > end) return 0;
    if (u->dest == bpf_htons(53) && skb->mark == 0) return 2;
    return u->dest == bpf_htons(99) ? 3 : 0;
}
char LICENSE[] SEC("license") = "GPL";
"""

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.parametrize("src", [BCC, pytest.param(LIBBPF, marks=needs_clang)], ids=["bcc", "libbpf"])
def test_verdicts_per_packet(request, tier, src, pktassert_programs):
    request.node.add_marker(pytest.mark.tc(src, func="port_guard"))
    tc = request.getfixturevalue("tc")
    inject = request.getfixturevalue("inject")
    c = inject([IP(dst=tc.ip) / UDP(dport=53), IP(dst=tc.ip) / UDP(dport=54), IP(dst=tc.ip) / UDP(dport=99)])
    assert c.verdicts == [TcVerdict.SHOT, TcVerdict.OK, TcVerdict.UNSPEC], c
    assert c[2].ret == 3
    assert tc.counts()[TcVerdict.SHOT] == 1
    if tier == "unit":
        assert inject(IP(dst=tc.ip) / UDP(dport=53), mark=7).verdict == TcVerdict.OK
    f = inject(IP(dst=tc.ip) / UDP(dport=53), count=200, vary={"sport": (1, 200)})
    assert f.count(TcVerdict.SHOT) == 200

EGRESS = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
SEC("tc")
int egress_guard(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800)) return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != 6) return 0;
    struct tcphdr *t = (void *)ip + ip->ihl * 4;
    if ((void *)(t + 1) > end) return 0;
    if (skb->mark == 42) return 0;
    return t->dest == bpf_htons(4444) ? 2 : 0;
}
char LICENSE[] SEC("license") = "GPL";
"""

@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.tc(EGRESS, func="egress_guard", direction="egress")
def test_egress_from_the_dut(tc, inject):
    r = inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S"), count=100)
    assert r.count(TcVerdict.SHOT) == 100
    r = inject.from_dut([IP(dst=tc.peer.ip) / TCP(dport=p, flags="S") for p in (4444, 80)])
    assert r.verdicts == [TcVerdict.SHOT, TcVerdict.OK]
    assert inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S"), mark=42).verdict == TcVerdict.OK
    assert inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S")).verdict == TcVerdict.SHOT
    if tc.tier == "live":
        got = tc.received_by_peer()
        assert [p[TCP].dport for p in got if TCP in p] == [80, 4444], got

XDP_SRC = """
int drop_udp_99(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP) return XDP_PASS;
    struct udphdr *u = (void *)ip + ip->ihl * 4;
    if ((void *)(u + 1) > end) return XDP_PASS;
    return u->dest == bpf_htons(99) ? XDP_DROP : XDP_PASS;
}
"""

@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.xdp(XDP_SRC, func="drop_udp_99")
@needs_clang
@pytest.mark.tc(LIBBPF, func="port_guard")
def test_xdp_and_tc_together(xdp, tc, inject):
    """Each stage's verdict per packet; a packet XDP dropped never reaches tc, and says so."""
    c = inject([IP(dst=tc.ip) / UDP(dport=p) for p in (53, 54, 99)])
    assert c.verdicts == [Verdict.PASS, Verdict.PASS, Verdict.DROP]
    assert c.stages["tc"].verdicts == [TcVerdict.SHOT, TcVerdict.OK]
    assert c[2].stages == {"xdp": Verdict.DROP, "tc": None}
    assert c[0].stages == {"xdp": Verdict.PASS, "tc": TcVerdict.SHOT}
    f = inject(IP(dst=tc.ip) / UDP(dport=53), count=5000, vary={"sport": (1, 5000)})
    assert f.stages["tc"].count(TcVerdict.SHOT) == 5000

@needs_clang
@pytest.mark.tc(LIBBPF, func="port_guard")
def test_flood_through_the_engine(tc, inject):
    """Live tier: tc ingress behind pktassert's pass-through XDP stage, so the traffic engine delivers."""
    f = inject(IP(dst=tc.ip) / UDP(dport=53), count=300_000, vary={"sport": (1, 60000)})
    assert f.count(TcVerdict.SHOT) == 300_000 and f.sent == 300_000
    assert tc.counts()[TcVerdict.SHOT] == 300_000


@needs_clang
@pytest.mark.tc(LIBBPF, func="port_guard")
def test_a_verdict_of_another_hook_is_not_compared(tc, inject):
    """Verdict.PASS is 2 and so is TcVerdict.SHOT: never a silent match."""
    c = inject(IP(dst=tc.ip) / UDP(dport=53))
    with pytest.raises(PktassertError, match="Verdict.PASS compared with a TcVerdict"):
        assert c.verdict == Verdict.PASS
    with pytest.raises(PktassertError, match="not a verdict of this hook"):
        c.count(Verdict.PASS)


@pytest.mark.tc(BCC, func="port_guard")
def test_fields_the_live_tier_cannot_set(tc, inject):
    with pytest.raises(InjectError, match=r"mark=7: in the live tier a frame arrives from the peer with mark 0"):
        inject(IP(dst=tc.ip) / UDP(dport=53), mark=7)
    with pytest.raises(InjectError, match=r"inject.from_dut\(\) sends from the DUT out through a tc egress filter; "
                                          r"this filter is at tc ingress"):
        inject.from_dut(IP(dst=tc.peer.ip) / UDP(dport=53))


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.tc(BCC, func="port_guard")
def test_unknown_sk_buff_field(tc, inject):
    with pytest.raises(InjectError, match=r"len=: a tc test run sets only these sk_buff fields: mark, priority"):
        inject(IP(dst=tc.ip) / UDP(dport=53), len=3)


@pytest.mark.xdp(XDP_SRC, func="drop_udp_99")
def test_sk_buff_fields_for_xdp_refused(xdp, inject):
    with pytest.raises(InjectError, match="mark=: sk_buff fields, for tc filters; an XDP program runs before"):
        inject(IP(dst=xdp.ip) / UDP(dport=53), mark=1)


def test_wrong_direction(pktassert_ready, pytester):
    pytester.makepyfile(test_it=f'''
        import pytest
        @pytest.mark.tc({BCC!r}, func="port_guard", direction="sideways")
        def test_f(tc):
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*direction='sideways'): tc filters attach at 'ingress' or 'egress'*"])


@pytest.mark.parametrize("src, func, hook, message", [
    (XDP_SRC, "drop_udp_99", "tc", r"drop_udp_99\(\) in <source text> takes struct xdp_md \*: it is an XDP program, not "
                                   r"a tc classifier. Fix: put it under @pytest.mark.xdp"),
    (BCC, "port_guard", "xdp", r"port_guard\(\) in <source text> takes struct __sk_buff \*: it is a tc classifier, not "
                               r"an XDP program. Fix: put it under @pytest.mark.tc"),
])
def test_a_program_of_the_other_hook_is_named(src, func, hook, message):
    from pktassert.programs.subjects import subject_of

    with pytest.raises(ProgramError, match=message):
        subject_of(src, func, hook=hook).load()


@needs_clang
def test_a_libbpf_classifier_given_as_xdp(tmp_path):
    from pktassert.programs.subjects import subject_of

    src = tmp_path / "guard.bpf.c"
    src.write_text(LIBBPF)
    with pytest.raises(ProgramError, match=r'port_guard\(\) is a sched_cls program \(SEC\("tc"\)\), not an XDP program. '
                                           r'Fix: put it at tc: @pytest.mark.tc'):
        subject_of(src, "port_guard").load()
    xdp_src = tmp_path / "x.bpf.c"
    xdp_src.write_text(LIBBPF.replace('SEC("tc")', 'SEC("xdp")').replace("struct __sk_buff *skb", "struct xdp_md *skb")
                       .replace("skb->mark == 0", "1"))
    with pytest.raises(ProgramError, match=r'port_guard\(\) is an XDP program \(SEC\("xdp"\)\), not a tc program. '
                                           r'Fix: put it at xdp: @pytest.mark.xdp'):
        subject_of(xdp_src, "port_guard", hook="tc").load()


@pytest.mark.tc(EGRESS, func="egress_guard", direction="egress")
def test_live_outputs_of_tc_say_where_to_look(tc, inject):
    with pytest.raises(InjectError, match=r"inject\(\) sends from the peer to the DUT, which a tc egress filter "
                                          r"never sees. Fix: inject.from_dut"):
        inject(IP(dst=tc.ip) / TCP(dport=80, flags="S"))
    c = inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=80, flags="S"))
    assert c.verdict == TcVerdict.OK
    with pytest.raises(PktassertError, match=r"the live tier does not pair the frames a tc filter sends on .* "
                                             r"tc.received_by_peer\(\)"):
        c[0].output
    assert [p[TCP].dport for p in tc.received_by_peer() if TCP in p] == [80]


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.parametrize("src", [BCC, pytest.param(LIBBPF, marks=needs_clang)], ids=["bcc", "libbpf"])
def test_run_and_cost(request, src, tier):
    """run() and cost() work on a tc filter as on an XDP one (test runs of sched_cls)."""
    request.node.add_marker(pytest.mark.tc(src, func="port_guard"))
    tc = request.getfixturevalue("tc")
    run = tc.run(IP(dst=tc.ip) / UDP(dport=53))
    assert run.verdict == TcVerdict.SHOT and run.ret == 2 and UDP in run.packet
    assert tc.run(IP(dst=tc.ip) / UDP(dport=99)).verdict == TcVerdict.UNSPEC
    assert tc.cost(IP(dst=tc.ip) / UDP(dport=53), repeat=1000).ns_per_packet > 0


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.tc(BCC, func="port_guard")
def test_vlan_tags_recorded_the_same_in_both_tiers(tc, inject):
    """Live, the kernel moves the outer VLAN tag into the sk_buff before tc; the record says the same as
    the unit tier's, where the tag stays in the frame."""
    from scapy.layers.l2 import Dot1Q, Ether

    c = inject([Ether(src=tc.peer.mac, dst=tc.mac) / Dot1Q(vlan=10) / IP(dst=tc.ip) / UDP(dport=54),
                Ether(src=tc.peer.mac, dst=tc.mac) / Dot1Q(vlan=20) / Dot1Q(vlan=30) / IP(dst=tc.ip) / UDP(dport=54)])
    assert c.records["vlan_outer"].tolist() == [10, 20]
    assert c.records["vlan_inner"].tolist() == [0, 30]
    assert c.records["vlan_count"].tolist() == [1, 2]
    assert c.records["len"].tolist() == [14 + 4 + 20 + 8, 14 + 8 + 20 + 8]
    # Three tags: more than the parser follows. Live the kernel takes the first into the sk_buff and two
    # stay in the frame; the record must still say what the unit tier's does (two tags, no IP parsed).
    three = inject(Ether(src=tc.peer.mac, dst=tc.mac) / Dot1Q(vlan=40) / Dot1Q(vlan=50) / Dot1Q(vlan=60)
                   / IP(dst=tc.ip) / UDP(dport=54)).records[0]
    assert (int(three["vlan_outer"]), int(three["vlan_inner"]), int(three["vlan_count"])) == (40, 50, 2)
    assert int(three["ethertype"]) == 0x8100 and int(three["l3"]) == 0 and int(three["proto"]) == 0
    assert int(three["parsed"]) == const("P_L2") | const("P_VLAN_MORE") and int(three["len"]) == 14 + 12 + 20 + 8


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.tc(BCC, func="port_guard")
def test_pcap_replay_and_where(tc, inject, tmp_path):
    """A capture replayed through a tc ingress filter, as through an XDP one; where() on its verdicts."""
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    frames = [Ether(src=tc.peer.mac, dst=tc.mac) / IP(src="198.51.100.7", dst=tc.ip) / UDP(sport=1000 + i, dport=port)
              for i, port in enumerate([53, 80, 53, 99, 53])]
    wrpcap(str(tmp_path / "dns.pcap"), frames)
    replay = inject.pcap(tmp_path / "dns.pcap")
    assert replay.sent == replay.accounted == 5
    assert replay.verdicts == [TcVerdict.SHOT, TcVerdict.OK, TcVerdict.SHOT, TcVerdict.UNSPEC, TcVerdict.SHOT]
    assert replay.where(UDP, dport=53).count(TcVerdict.SHOT) == 3
    assert replay.where(sport=1003)[0].ret == 3
