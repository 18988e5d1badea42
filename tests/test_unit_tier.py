"""The unit tier: the program run by BPF_PROG_TEST_RUN on frames we hand the kernel, behind the same API."""

import re
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktassert import InjectError, PktassertError, Verdict

ROOT = Path(__file__).resolve().parent.parent
BOTH = pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)

A, B = "02:00:5e:00:53:0a", "02:00:5e:00:53:0b"

# Swaps the MACs and sends UDP to port 7 back where it came from; everything else passes.
REFLECTOR = r"""
#include <linux/udp.h>
int reflector(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP
	    || ip->ihl != 5 || udp->dest != bpf_htons(7))
		return XDP_PASS;
	unsigned char tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}
"""

pytestmark = pytest.mark.xdp(REFLECTOR, func="reflector")


@BOTH
def test_reflector_swaps_macs(xdp):
    out = xdp.run(Ether(src=A, dst=B) / IP(dst=xdp.ip) / UDP(dport=7) / b"ping")
    assert out.verdict == Verdict.TX
    assert (out.packet[Ether].src, out.packet[Ether].dst) == (B, A)
    assert bytes(out.packet[UDP].payload) == b"ping"


@BOTH
def test_other_traffic_passes_unchanged(xdp):
    pkt = Ether(src=A, dst=B) / IP(src="198.51.100.1", dst=xdp.ip) / TCP(dport=7)
    out = xdp.run(pkt)
    assert out.verdict == Verdict.PASS
    assert out.data == bytes(pkt)


def test_cost_comes_from_the_kernel(xdp):
    cost = xdp.cost(IP(dst=xdp.ip) / TCP(dport=80, flags="S"), repeat=10_000)
    assert cost.repeat == 10_000
    assert 0 < cost.ns_per_packet < 10_000   # a few dozen ns here; zero would mean nothing ran


def test_frames_the_kernel_refuses_name_the_limit(xdp):
    with pytest.raises(InjectError, match="shorter than an Ethernet header"):
        xdp.run(b"\x00" * 10)
    # Larger than a page is fine (the kernel splits it into fragments), up to a limit it sets.
    assert xdp.run(Ether(src=A, dst=B) / IP(dst=xdp.ip) / UDP() / (b"x" * 8958)).verdict == Verdict.PASS
    with pytest.raises(InjectError, match=r"refused packet #0, a 100000-byte frame, .* of 14 to \d+ bytes here"):
        xdp.run(bytes(Ether(src=A, dst=B)) + bytes(100_000 - 14))


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
def test_unit_inject_gives_each_output_packet(xdp, inject):
    echo = Ether(src=A, dst=B) / IP(dst=xdp.ip) / UDP(dport=7) / b"ping"
    other = Ether(src=A, dst=B) / IP(dst=xdp.ip) / TCP(dport=7)
    result = inject([echo, other, echo])
    assert result.verdicts == [Verdict.TX, Verdict.PASS, Verdict.TX]
    assert [(p[Ether].src, p[Ether].dst) for p in result.outputs] == [(B, A), (A, B), (B, A)]
    assert bytes(result.outputs[1]) == result.frame(1)     # unchanged frames come back as sent
    assert list(result.rewritten().index) == [0, 2]
    assert result.where(UDP).count(Verdict.TX) == 2
    assert inject(echo).output[Ether].dst == A


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
def test_unit_flood_crosses_batches(xdp, inject):
    # 150,000 frames: three batches of the record slots, the second wrapping around them.
    inject(IP(dst=xdp.ip) / UDP(dport=9), count=30_000)
    result = inject(IP(dst=xdp.ip) / UDP(dport=7), count=150_000, vary={"sport": (1, 65535)})
    assert result.sent == result.accounted == len(result) == 150_000
    assert result.count(Verdict.TX) == 150_000
    assert list(result.records["sport"][[0, 65534, 65535, 149_999]]) == [1, 65535, 1, 149_999 % 65535 + 1]
    assert xdp.counts()[Verdict.TX] == 150_000 and xdp.counts()[Verdict.PASS] == 30_000
    assert len(result.rewritten()) == 150_000


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
def test_unit_tier_has_no_topology(xdp, inject):
    assert xdp.tier == inject.tier == "unit" and xdp.peer.ns is None
    with pytest.raises(PktassertError, match=r"unit tier .* no namespaces .*parametrize\("):
        xdp.topology


@pytest.mark.parametrize("tier", ["live"], indirect=True)
def test_live_tier_outputs_are_the_frames_that_came_out(xdp, inject):
    result = inject([Ether(src=A, dst=B) / IP(dst=xdp.ip) / UDP(dport=7), Ether(src=A, dst=B) / IP(dst=xdp.ip) / TCP(dport=7)])
    assert result.verdicts == [Verdict.TX, Verdict.PASS]
    assert (result[0].output[Ether].src, result[0].output[Ether].dst) == (B, A)   # as it arrived at the peer
    assert [o[Ether].dst for o in result.outputs] == [A] and list(result.rewritten().index) == [0]
    with pytest.raises(PktassertError, match="packet #1 has no output frame in the live tier: its verdict was PASS"):
        result[1].output


TIER_PROBE = f"""
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict
pytestmark = pytest.mark.xdp({str(ROOT / "examples" / "port_blocklist.c")!r}, func="port_blocklist")
def test_follows_option(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23)).verdict == Verdict.DROP
    print("TIER", xdp.tier)
@pytest.mark.parametrize("tier", ["live"], indirect=True)
def test_pinned_live(xdp, inject):
    assert xdp.tier == "live" and xdp.peer.ns is not None
"""


@pytest.mark.parametrize("option, expected", [
    ((), ["*test_follows_option*", "*test_pinned_live?live?*"]),
    (("--pktassert-tier=unit",), ["*test_follows_option*", "*test_pinned_live?live?*"]),
    (("--pktassert-tier=both",), ["*test_follows_option?live?*", "*test_follows_option?unit?*",
                                  "*test_pinned_live?live?*"]),
])
def test_tier_chosen_by_option_unless_pinned(pktassert_ready, pytester, option, expected):
    pytester.makepyfile(test_probe=TIER_PROBE)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "-s", *option)
    res.stdout.fnmatch_lines_random(expected)
    tiers = re.findall(r"TIER (\w+)", res.stdout.str())
    assert sorted(tiers) == {(): ["live"], ("--pktassert-tier=unit",): ["unit"]}.get(option, ["live", "unit"])
    res.assert_outcomes(passed=len(expected))
