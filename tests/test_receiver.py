"""The receiver and the honeypot: what the DUT transmits (XDP_TX), redirects or sends from its stack
arrives at the far end as on a real link, tagged with the DUT side's metadata, and is recorded."""

import ctypes
import os
import socket
import time

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from pktassert.instruments.receiver import Receiver, frame_hashes
from pktassert.instruments.sender import Sender
from pktassert.netns import Topology
from pktassert.netns.snapshot import snapshot

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, veth pairs and XDP attach"),
    pytest.mark.usefixtures("pktassert_ready"),
]
bcc = pytest.importorskip("bcc", reason="needs bcc (Debian's python3-bpfcc) to compile the programs")

ECHO_PORT = 7
# A stand-in for the DUT side: for UDP to ECHO_PORT it swaps MACs, addresses and ports (checksums
# stay valid), tags the frame as pktassert's inspector will ([magic][tag] in the XDP metadata) and
# sends it back out (XDP_TX) or to toy_ports[0] (redirect). Everything else goes to its stack.
TOY_DUT = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
BPF_DEVMAP(toy_ports, 1);
BPF_ARRAY(toy_mode, __u32, 1);   /* 0: XDP_TX, 1: redirect through toy_ports[0] */
BPF_ARRAY(toy_tag, __u32, 1);    /* the next tag; one rx queue, so one NAPI runs this at a time */
int toy_dut(struct xdp_md *ctx) {
    __u32 zero = 0, *mode = toy_mode.lookup(&zero), *next = toy_tag.lookup(&zero);
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct udphdr *udp = data + sizeof(*eth) + sizeof(*ip);
    if (!mode || !next || (void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
        ip->ihl != 5 || ip->protocol != 17 /* UDP */ || udp->dest != bpf_htons(ECHO_PORT))
        return XDP_PASS;
    __u8 mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, mac, ETH_ALEN);
    __u32 a = ip->saddr; ip->saddr = ip->daddr; ip->daddr = a;
    __u16 p = udp->source; udp->source = udp->dest; udp->dest = p;
    __u32 tag = (*next)++;
    if (bpf_xdp_adjust_meta(ctx, -8))
        return XDP_ABORTED;
    __u32 *meta = (void *)(long)ctx->data_meta;
    if ((void *)(meta + 2) > (void *)(long)ctx->data)
        return XDP_ABORTED;
    meta[0] = bpf_htonl(0x706b746f);
    meta[1] = bpf_htonl(tag);
    return *mode == 1 ? toy_ports.redirect_map(0, 0) : XDP_TX;
}
"""


@pytest.fixture(scope="module")
def toy():
    b = bcc.BPF(text=TOY_DUT.encode(), cflags=[f"-DECHO_PORT={ECHO_PORT}"])
    fd = b.load_func(b"toy_dut", bcc.BPF.XDP).fd
    yield b, fd
    b.cleanup()


@pytest.fixture(scope="module")
def receiver():
    with Receiver(keep=1000) as r:
        yield r


@pytest.fixture
def topo(toy, receiver):
    b, fd = toy
    b[b"toy_mode"][ctypes.c_int(0)] = ctypes.c_uint32(0)
    b[b"toy_tag"][ctypes.c_int(0)] = ctypes.c_uint32(0)
    with Topology(label="test_receiver") as t:
        t.dut.ns.ipr.link("set", index=t.dut.ifindex, xdp_fd=fd)
        receiver.attach(t.peer.ns, t.peer.ifindex)
        receiver.clear()
        yield t
        receiver.detach()


def _echo_requests(t, n):
    return [bytes(Ether(src=t.peer.mac, dst=t.dut.mac) / IP(src=t.peer.ip, dst=t.dut.ip)
                  / UDP(sport=5000, dport=ECHO_PORT) / f"request {i}".encode()) for i in range(n)]


def _echoed(frame):
    """The frame as the toy sends it back: MACs, IPv4 addresses and UDP ports swapped."""
    return frame[6:12] + frame[0:6] + frame[12:26] + frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36] + frame[38:]


def _inject(t, frames):
    s = t.peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with s:
        s.bind((t.peer.ifname, 0))
        for f in frames:
            s.send(f)


def test_xdp_tx_frames_arrive_tagged_with_their_exact_bytes_and_reach_the_peer_stack(topo, receiver):
    sock = topo.peer.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((topo.peer.ip, 5000))
        sock.settimeout(2)
        frames = _echo_requests(topo, 20)
        _inject(topo, frames)
        assert receiver.wait(20)
        # The peer's stack got each frame as it arrived: the receiver passed it on unchanged.
        assert sorted(sock.recv(100) for _ in frames) == sorted(f"request {i}".encode() for i in range(20))
    expected = [_echoed(f) for f in frames]
    assert receiver.tagged() == {i: [e] for i, e in enumerate(expected)}
    assert receiver.untagged() == []
    got = receiver.frames()
    assert {f.ifindex for f in got} == {topo.peer.ifindex}
    assert [f.length for f in got] == [len(e) for e in expected]
    assert [f.hash for f in got] == frame_hashes(expected).tolist()
    counts = receiver.counts()
    assert (counts["frames"], counts["tagged"], counts["untagged"], counts["bytes_kept"]) == (20, 20, 0, 20)
    # Nothing more went anywhere: the DUT transmitted every frame it was given.
    stats = topo.dut.ns.ipr.get_links(index=topo.dut.ifindex)[0].get_attr("IFLA_STATS64")
    assert (stats["tx_packets"], stats["tx_dropped"]) == (20, 0)


def test_devmap_redirect_to_the_honeypot_arrives_there_tagged(topo, receiver, toy):
    b, _ = toy
    hp, port = topo.honeypot, topo.honeypot_port
    assert hp.ifindex != topo.peer.ifindex  # so the records tell them apart
    receiver.attach(hp.ns, hp.ifindex)
    # From inside the DUT namespace: the kernel resolves a devmap's ifindex in the writer's namespace.
    with topo.dut.ns.entered():
        b[b"toy_ports"][ctypes.c_int(0)] = ctypes.c_int(port.ifindex)
    b[b"toy_mode"][ctypes.c_int(0)] = ctypes.c_uint32(1)
    frames = _echo_requests(topo, 10)
    _inject(topo, frames)
    assert receiver.wait(10)
    assert receiver.tagged(hp.ifindex) == {i: [_echoed(f)] for i, f in enumerate(frames)}
    assert receiver.frames(topo.peer.ifindex) == []


def test_dut_stack_frames_arrive_untagged(topo, receiver):
    with topo.peer.ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            topo.dut.ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as dut_sock:
        sock.bind((topo.peer.ip, 5001))
        sock.settimeout(2)
        dut_sock.sendto(b"from the DUT stack", (topo.peer.ip, 5001))
        assert sock.recv(100) == b"from the DUT stack"
        # A datagram to a closed port: the DUT's stack answers with ICMP port unreachable.
        sock.sendto(b"?", (topo.dut.ip, 9))
        assert receiver.wait(2)
    untagged = receiver.untagged()
    assert receiver.tagged() == {} and len(untagged) == 2
    udp, icmp = (Ether(f.data) for f in untagged)
    assert udp[UDP].dport == 5001 and udp[IP].src == topo.dut.ip
    assert icmp[IP].proto == 1 and icmp[ICMP].type == 3 and icmp[ICMP].code == 3


def test_a_flood_is_summarised_frame_by_frame_and_clear_starts_afresh(topo, receiver):
    n = 100_000
    frame = _echo_requests(topo, 1)[0]
    data = np.frombuffer(frame * n, np.uint8)
    offsets = np.arange(n, dtype=np.int64) * len(frame)
    lengths = np.full(n, len(frame), np.int64)
    sender = Sender()
    try:
        with receiver.draining():
            done = 0
            while done < n:
                placed = sender.place(data, offsets[done:], lengths[done:])
                sent, refused = sender.send(placed, topo.peer.ns, topo.peer.ifindex)
                assert (sent, refused) == (placed, 0)
                done += placed
            assert receiver.wait(n, timeout=5)
    finally:
        sender.close()
    s = receiver.summaries()
    assert len(s) == n and s["tagged"].all()
    assert sorted(s["tag"].tolist()) == list(range(n))
    assert (s["hash"] == frame_hashes([_echoed(frame)])[0]).all()
    assert s["kept"].sum() == 1000 and len(receiver.frames()) == 1000
    counts = receiver.counts()
    assert counts == {"frames": n, "tagged": n, "untagged": 0, "summaries_lost": 0,
                      "bytes_kept": 1000, "bytes_lost": 0, "bytes_skipped": n - 1000}
    receiver.clear()
    assert receiver.counts()["frames"] == 0 and len(receiver.summaries()) == 0 and receiver.frames() == []


def test_a_full_ring_is_counted_not_silent(toy):
    b, fd = toy
    b[b"toy_mode"][ctypes.c_int(0)] = ctypes.c_uint32(0)
    with Receiver(keep=4, summary_ring=1 << 14, frame_ring=1 << 14) as small, Topology(label="test_receiver") as t:
        t.dut.ns.ipr.link("set", index=t.dut.ifindex, xdp_fd=fd)
        small.attach(t.peer.ns, t.peer.ifindex)
        _inject(t, _echo_requests(t, 1000))  # nothing drains meanwhile
        deadline = time.monotonic() + 2
        while small.counts()["frames"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        counts, got = small.counts(), small.received()
        assert counts["frames"] == 1000 and got < 1000
        assert got + counts["summaries_lost"] == 1000
        assert counts["bytes_kept"] + counts["bytes_lost"] == 4


def test_the_honeypot_is_made_on_demand_and_goes_with_the_topology(pktassert_ready):
    before, root_links = snapshot(), socket.if_nameindex()
    with Topology() as t:
        assert len(t._namespaces) == 2  # nothing yet
        hp = t.honeypot
        assert t.honeypot is hp and t.honeypot_port.ns is t.dut.ns
        assert sorted(link.get_attr("IFLA_IFNAME") for link in t.dut.ns.ipr.get_links()) == ["dut0", "hp0", "lo"]
        assert sorted(link.get_attr("IFLA_IFNAME") for link in hp.ns.ipr.get_links()) == ["hp1", "lo"]
        assert {hp.ip, t.honeypot_port.ip}.isdisjoint({t.dut.ip, t.peer.ip})
        assert socket.if_nameindex() == root_links
        # The link works both ways through the stacks (static neighbours, no ARP).
        with hp.ns.socket(socket.AF_INET6, socket.SOCK_DGRAM) as a, \
                t.dut.ns.socket(socket.AF_INET6, socket.SOCK_DGRAM) as b:
            a.bind((hp.ip6, 4000))
            a.settimeout(2)
            b.sendto(b"hi", (hp.ip6, 4000))
            assert a.recv(10) == b"hi"
    assert snapshot() == before
