"""XDP_TX and XDP_REDIRECT do what they do on a real link: TX'd frames arrive at the peer (its stack
answers them), redirects seeded from the test land on the DUT side's target, and nothing reaches an
interface of the root namespace. What came out is in the Capture."""

import socket

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktassert import PktassertError, Verdict

LIVE = pytest.mark.parametrize("tier", ["live"], indirect=True)

# An echo responder: UDP to port 7 goes back where it came from, addresses and ports swapped.
ECHO = r"""
#include <linux/udp.h>
int echo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP
	    || ip->ihl != 5 || udp->dest != bpf_htons(7))
		return XDP_PASS;
	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	__be16 p = udp->source;
	udp->source = udp->dest;
	udp->dest = p;
	return XDP_TX;   /* checksums stay right: a swap changes no 16-bit sum */
}
"""

# Every TCP frame goes wherever slot 0 of the devmap says.
REDIRECT = r"""
BPF_DEVMAP(tx_port, 4);
int redirect_tcp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	return tx_port.redirect_map(0, 0);
}
"""


@LIVE
@pytest.mark.xdp(ECHO, func="echo")
def test_tx_echo_reaches_the_peers_socket(xdp, inject):
    sock = xdp.peer.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((xdp.peer.ip, 5000))
    sock.settimeout(2)
    try:
        r = inject(IP(dst=xdp.ip) / UDP(sport=5000, dport=7) / b"ping")
        assert r.verdict == Verdict.TX and r[0].landed == "peer"
        assert r.output[IP].dst == xdp.peer.ip and r.output[UDP].dport == 5000
        assert len(r.rewritten()) == 1
        assert sock.recvfrom(100) == (b"ping", (xdp.ip, 7))   # the responder works end to end
    finally:
        sock.close()


@LIVE
@pytest.mark.xdp(ECHO, func="echo")
def test_a_flood_of_tx_frames_all_arrive(xdp, inject):
    r = inject(IP(dst=xdp.ip) / UDP(dport=7), count=3000, vary={"sport": (1, 3000)})
    assert r.count(Verdict.TX) == 3000
    outs = r.outputs
    assert len(outs) == 3000 and [o[UDP].dport for o in outs[:3]] == [1, 2, 3]
    with pytest.raises(PktassertError, match="packet #0 has no output frame"):
        inject(IP(dst=xdp.ip) / UDP(dport=9)).output      # PASS: it never left the DUT


def _root_counters() -> dict[str, tuple[int, int]]:
    with IPRoute() as ipr:  # read only: the root namespace's own interfaces
        return {link.get_attr("IFLA_IFNAME"): (link.get_attr("IFLA_STATS64")["tx_packets"],
                                               link.get_attr("IFLA_STATS64")["rx_packets"])
                for link in ipr.get_links()}


@LIVE
@pytest.mark.xdp(REDIRECT, func="redirect_tcp")
def test_devmap_seeded_from_the_test_redirects_inside_the_test_namespaces(xdp, inject):
    before = _root_counters()
    # An interface index written from the test names the DUT namespace's interface: here the
    # honeypot's port. (Written from the root namespace, it would bind the host's interface.)
    xdp.map("tx_port")[0] = xdp.honeypot.ifindex
    r = inject(IP(dst=xdp.ip) / TCP(dport=80, flags="S"), count=2000, vary={"sport": (1, 2000)})
    assert r.count(Verdict.REDIRECT) == 2000
    assert {o.landed for o in r} == {"honeypot"}
    got = xdp.honeypot.received()
    assert len(got) == 2000 and [p[TCP].sport for p in got[:3]] == [1, 2, 3]
    after = _root_counters()
    moved = {name: (after[name][0] - tx, after[name][1] - rx) for name, (tx, rx) in before.items() if name in after}
    assert all(tx < 2000 and rx < 2000 for tx, rx in moved.values()), moved


@LIVE
@pytest.mark.xdp(REDIRECT, func="redirect_tcp")
def test_redirect_back_out_of_the_dut_veth_reaches_the_peer(xdp, inject):
    xdp.map("tx_port")[0] = xdp.ifindex
    r = inject(Ether(src=xdp.peer.mac, dst=xdp.mac) / IP(dst=xdp.ip) / TCP(dport=22))
    assert r.verdict == Verdict.REDIRECT and r[0].landed == "peer"
    assert r.output == Ether(r.frame(0))
    assert any(TCP in p and p[TCP].dport == 22 for p in xdp.received_by_peer())


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.xdp(REDIRECT, func="redirect_tcp")
def test_unit_tier_map_writes_resolve_in_a_throwaway_namespace(xdp, inject):
    xdp.map("tx_port")[0] = xdp.ifindex       # 1: the loopback of pktassert's own namespace
    assert inject(IP(dst=xdp.ip) / TCP(dport=80)).verdict == Verdict.REDIRECT
    with pytest.raises(PktassertError, match=r"tx_port.*refused"):
        xdp.map("tx_port")[1] = 4000          # no such interface there (nor is the host's looked at)


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.xdp(ECHO, func="echo")
def test_unit_tier_has_no_peer_or_honeypot_to_receive(xdp):
    for what in ("received_by_peer", "honeypot"):
        with pytest.raises(PktassertError, match=r"unit tier .* no namespaces"):
            attr = getattr(xdp, what)
            attr() if callable(attr) else attr
