"""BPF_PROG_TEST_RUN: the program run on frames we hand the kernel, no traffic (first part of the unit tier)."""

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktassert import InjectError, Verdict

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


def test_reflector_swaps_macs(xdp):
    out = xdp.run(Ether(src=A, dst=B) / IP(dst=xdp.ip) / UDP(dport=7) / b"ping")
    assert out.verdict == Verdict.TX
    assert (out.packet[Ether].src, out.packet[Ether].dst) == (B, A)
    assert bytes(out.packet[UDP].payload) == b"ping"


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
