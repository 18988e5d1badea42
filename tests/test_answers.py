"""Every answer the DUT's stack sends for an injected packet is that packet's ``.answer``: a TCP
reset or an ICMP/ICMPv6 error, the stack's own and nftables' ``reject`` alike (which builds its
RST without the tcp_send_reset tracepoint, and its ICMPv6 errors without any). The oracle is a
sniffer on the peer (an AF_PACKET socket in its namespace): what it saw, packet for packet."""

import functools
import socket
import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether

from pktassert import Fate

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SRC, SRC6 = "198.51.100.7", "2001:db8:1::7"

RESET = """
table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 9 reject with tcp reset
    tcp dport 8 drop
  }
}
"""
UNREACH = """
table ip t4 {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 9 reject with icmp type port-unreachable
  }
}
table ip6 t6 {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 9 reject with icmpv6 type port-unreachable
  }
}
table inet tx {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 7 reject with icmpx type admin-prohibited
  }
}
"""


class PeerSniffer:
    """Every frame that arrives at the peer's veth end from now on, as the peer's kernel sees it."""

    def __init__(self, dut) -> None:
        peer = dut.topology.peer
        self.sock = peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)  # before bind: nothing dropped
        self.sock.bind((peer.ifname, ETH_P_ALL))

    def frames(self) -> list[Ether]:
        out = []
        self.sock.settimeout(0.3)  # the peer's NAPI hands them over after the DUT sent them
        try:
            while True:
                data, addr = self.sock.recvfrom(65535)
                if addr[2] != socket.PACKET_OUTGOING:
                    out.append(Ether(data))
        except TimeoutError:
            pass
        self.sock.close()
        return out


@pytest.fixture
def peer_sniffer(dut):
    sniffer = PeerSniffer(dut)
    yield sniffer
    sniffer.sock.close()


def resets(frames, src):
    """(to address, to port, ack) of each TCP reset from ``src`` the peer saw."""
    ip = IP if ":" not in src else IPv6
    return [(f[ip].dst, f[TCP].dport, f[TCP].ack) for f in frames
            if ip in f and TCP in f and f[ip].src == src and f[TCP].flags.R]


def sources(capture, ip):
    return [ip(capture.frame(i)[14:]).src for i in range(len(capture))]


@pytest.mark.nftables(RESET)
@pytest.mark.parametrize("vary", [{"sport": (40000, 40019)}, None], ids=["ports", "identical"])
def test_reject_with_tcp_reset_answers_each_syn(dut, inject, peer_sniffer, vary):
    r = inject(IP(src=SRC, dst=dut.ip) / TCP(sport=40000, dport=9, flags="S", seq=1000), count=20, vary=vary)
    seen = resets(peer_sniffer.frames(), dut.ip)
    ports = [40000 + i for i in range(20)] if vary else [40000] * 20
    assert sorted(seen) == [(SRC, p, 1001) for p in ports]  # 20 RSTs at the peer, each acking its SYN
    assert [p.answer for p in r] == ["RST"] * 20
    assert r.fates() == {Fate.NETFILTER_DROPPED: 20} and r.reasons() == {"NETFILTER_DROP": 20}
    assert r[0].rule == "tcp dport 9 reject with tcp reset"


@pytest.mark.nftables(RESET)
def test_reject_with_tcp_reset_answers_each_ipv6_syn(dut, inject, peer_sniffer):
    r = inject(IPv6(src=SRC6, dst=dut.topology.dut.ip6) / TCP(dport=9, flags="S", seq=7), count=20,
               vary={"sport": (40000, 40019)})
    seen = resets(peer_sniffer.frames(), dut.topology.dut.ip6)
    assert sorted(seen) == [(SRC6, 40000 + i, 8) for i in range(20)]
    assert [p.answer for p in r] == ["RST"] * 20
    assert r.fates() == {Fate.NETFILTER_DROPPED: 20}


@pytest.mark.nftables(RESET)
def test_only_the_rejected_packets_are_answered(dut, inject, peer_sniffer):
    # Rejected (dport 9) and silently dropped (dport 8) SYNs in turn, the same sequence number in
    # all: an answer goes to the packet it answers, never to the next one dropped.
    r = inject([IP(src=SRC, dst=dut.ip) / TCP(sport=40000 + i, dport=9 if i % 2 else 8, flags="S", seq=1000)
                for i in range(20)])
    seen = resets(peer_sniffer.frames(), dut.ip)
    assert sorted(seen) == [(SRC, 40000 + i, 1001) for i in range(1, 20, 2)]
    assert [p.answer for p in r] == [None, "RST"] * 10


@pytest.mark.nftables(RESET)
def test_a_neighbours_reset_is_not_an_injected_packets(dut, inject, peer_sniffer):
    # The peer's own SYNs (not injected, not tracked) are rejected meanwhile, with the same sequence
    # number as the injected ones, half of which are dropped without an answer: those stay unanswered.
    peer = dut.topology.peer
    noise = peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    noise.bind((peer.ifname, ETH_P_ALL))
    frame = bytes(Ether(src=peer.mac, dst=dut.topology.dut.mac) / IP(src=SRC, dst=dut.ip) /
                  TCP(sport=50000, dport=9, flags="S", seq=1000))
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            noise.send(frame)
            time.sleep(0.0002)

    t = threading.Thread(target=chatter)
    t.start()
    try:
        r = inject(IP(src=SRC, dst=dut.ip) / TCP(sport=50000, dport=8, flags="S", seq=1000), count=1000,
                   vary={"dport": (8, 9)}, rate=20_000)
    finally:
        stop.set()
        t.join()
        noise.close()
    seen = resets(peer_sniffer.frames(), dut.ip)
    assert len(seen) > 500  # the injected ones rejected and the neighbour's
    assert r.fates() == {Fate.NETFILTER_DROPPED: 1000}
    assert [p.answer for p in r] == [None, "RST"] * 500


# (the rule set's port, the address range each test's datagrams come from, the answer)
ICMP_REJECTS = [(IP, 9, "198.51.100.0/24", "ICMP 3/3"), (IPv6, 9, "2001:db8:1::/120", "ICMP 1/4"),
                (IP, 7, "203.0.113.0/25", "ICMP 3/13"), (IPv6, 7, "2001:db8:2::/120", "ICMP 1/1")]


@pytest.mark.nftables(UNREACH)
@pytest.mark.parametrize("ip, port, sources_, answer", ICMP_REJECTS,
                         ids=["icmp", "icmpv6", "icmpx-v4", "icmpx-v6"])
def test_reject_with_icmp_answers_each_datagram(dut, inject, peer_sniffer, ip, port, sources_, answer):
    # Each from its own source: the kernel rate-limits ICMP errors per destination.
    dst = dut.ip if ip is IP else dut.topology.dut.ip6
    r = inject(ip(src=sources_.split("/")[0], dst=dst) / UDP(sport=5000, dport=port), count=20,
               vary={"src": sources_})
    frames = peer_sniffer.frames()
    if ip is IP:
        quoted = {(f[ICMP].type, f[ICMP].code, f[IPerror].src) for f in frames
                  if ICMP in f and IPerror in f and UDPerror in f}
    else:
        quoted = {(f[ICMPv6DestUnreach].type, f[ICMPv6DestUnreach].code, f[IPerror6].src) for f in frames
                  if ICMPv6DestUnreach in f and IPerror6 in f}
    t, c = (int(x) for x in answer[5:].split("/"))
    heard = {src for (qt, qc, src) in quoted if (qt, qc) == (t, c)}
    assert len(heard) == 20  # the peer heard one per datagram
    assert {src: p.answer for src, p in zip(sources(r, ip), r)} == dict.fromkeys(heard, answer)
    assert r.fates() == {Fate.NETFILTER_DROPPED: 20}


def test_the_stacks_own_icmpv6_error_is_an_answer(dut, inject, peer_sniffer):
    r = inject(IPv6(src=SRC6, dst=dut.topology.dut.ip6) / UDP(sport=5000, dport=54), count=5,
               vary={"src": "2001:db8:1::/120"})
    heard = {f[IPerror6].src for f in peer_sniffer.frames() if ICMPv6DestUnreach in f and IPerror6 in f}
    assert len(heard) == 5
    assert {p.answer for p in r} == {"ICMP 1/4"} and r.fates() == {Fate.ANSWERED: 5}
    assert r.reasons() == {"NO_SOCKET": 5}


@pytest.mark.nftables(RESET)
def test_an_answer_that_cannot_be_attributed_is_unknown_never_none(dut, inject, peer_sniffer):
    # nftables finds the TCP header behind seven destination options and rejects the SYN; the fate
    # tracker reads six extension headers deep: it sees a reset go out but cannot tell whose it is.
    from pktassert.observers.fate import (  # what Outcome.answer says (pktassert/results/capture_fates.py)
        ANSWER_UNKNOWN,
        answer_of,
    )

    deep = functools.reduce(lambda p, _: p / IPv6ExtHdrDestOpt(), range(7), IPv6(src=SRC6, dst=dut.topology.dut.ip6))
    shallow = IPv6(src=SRC6, dst=dut.topology.dut.ip6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
    r = inject([deep / TCP(sport=40001, dport=9, flags="S", seq=7), shallow / TCP(sport=40002, dport=9, flags="S")])
    assert sorted(port for _, port, _ in resets(peer_sniffer.frames(), dut.topology.dut.ip6)) == [40001, 40002]
    assert [answer_of(rec) for rec in r.fate_records] == [ANSWER_UNKNOWN, "RST"]
    assert r.fates() == {Fate.NETFILTER_DROPPED: 2}
