"""The stateful firewall (stateful_firewall.nft) with real TCP connections: the peer's SYN, the DUT's
own SYN-ACK (read off the wire at the peer), the ACK that answers it with the right numbers, and data
on the connection. Each packet says what became of it, which rule decided, and the connection state
conntrack had given it when the rule set judged it (``.ct``)."""

import socket
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from pktassert import DUT_IP, DUT_IP6, Ct, Fate

pytestmark = pytest.mark.nftables("stateful_firewall.nft")

# Clients in documentation ranges, not the peer's own address: the DUT answers them through the peer
# (its gateway), which does not forward; the peer's stack would reset a connection it never opened.
CLIENT, CLIENT6 = "198.51.100.7", "2001:db8:5::7"
ESTABLISHED = "ct state established,related accept"  # the rules as nft prints them
INVALID = "ct state invalid drop"
SSH4 = "tcp dport 22 ct state new meter ssh4 size 65535 { ip saddr limit rate 10/second } accept"
SSH6 = "tcp dport 22 ct state new meter ssh6 size 65535 { ip6 saddr limit rate 10/second } accept"
WEB = "tcp dport 8080 ct status dnat accept"


def sent_by_dut(dut, wanted, timeout=2.0):
    """The first frame the DUT sent out (as the peer received it) that ``wanted`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [f for f in dut.received_by_peer() if wanted(f)]
        if found:
            return found[0]
    raise AssertionError(f"the DUT sent no such frame within {timeout} s")


def syn_ack(dut, client_port):
    """The DUT's SYN-ACK to a client port: its TCP header (the DUT's sequence number is in it)."""
    return sent_by_dut(dut, lambda f: TCP in f and f[TCP].dport == client_port and f[TCP].flags == "SA")[TCP]


def handshake(dut, inject, ip, sport, dport=22):
    """A whole three-way handshake from ``ip``; returns the client's next (seq, ack)."""
    syn = inject(ip / TCP(sport=sport, dport=dport, flags="S", seq=1000))
    assert syn[0].fate == Fate.DELIVERED, syn[0]
    server = syn_ack(dut, sport)
    assert server.ack == 1001  # the DUT acknowledges our SYN
    seq, ack = 1001, server.seq + 1
    assert inject(ip / TCP(sport=sport, dport=dport, flags="A", seq=seq, ack=ack))[0].fate == Fate.DELIVERED
    return seq, ack


@pytest.mark.parametrize("ip, ssh_rule", [(IP(src=CLIENT, dst=DUT_IP), SSH4),
                                          (IPv6(src=CLIENT6, dst=DUT_IP6), SSH6)], ids=["ipv4", "ipv6"])
def test_a_connection_is_judged_once_then_rides_on_its_state(dut, inject, ip, ssh_rule):
    sshd = dut.listen(tcp=22)
    syn = inject(ip / TCP(sport=40000, dport=22, flags="S", seq=1000))
    assert syn[0].fate == Fate.DELIVERED and syn[0].rule == ssh_rule  # the SSH rule judged the new connection
    server = syn_ack(dut, 40000)
    assert server.ack == 1001
    seq, ack = 1001, server.seq + 1                                   # the right numbers, from the DUT's SYN-ACK
    r = inject([ip / TCP(sport=40000, dport=22, flags="A", seq=seq, ack=ack),
                ip / TCP(sport=40000, dport=22, flags="PA", seq=seq, ack=ack) / b"SSH-2.0-client\r\n"])
    assert r.fates() == {Fate.DELIVERED: 2}
    assert [p.rule for p in r] == [ESTABLISHED] * 2                   # never the SSH rule again
    assert sshd.accepted() == 1                                       # the socket has a whole connection
    # The state conntrack gave each packet before the rule set saw it.
    assert (syn[0].ct, syn[0].ct_reply, syn[0].ct_status) == (Ct.NEW, False, frozenset())  # not even confirmed yet
    assert r.ct_states() == {Ct.ESTABLISHED: 2} and not any(p.ct_reply for p in r)
    assert r[0].ct_status == {"confirmed", "seen_reply", "assured"}   # this ACK made the connection assured


def test_replies_to_the_hosts_own_connection_come_back(dut, inject):
    # The DUT connects out (a real socket in its namespace); the server's SYN-ACK, injected from the
    # peer, is the connection's reply direction.
    client = dut.topology.dut.netns.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex(("198.51.100.80", 443))
    syn = sent_by_dut(dut, lambda f: TCP in f and f[TCP].dport == 443 and f[TCP].flags == "S")[TCP]
    server = IP(src="198.51.100.80", dst=dut.ip)
    r = inject(server / TCP(sport=443, dport=syn.sport, flags="SA", seq=5000, ack=syn.seq + 1))
    assert r[0].rule == ESTABLISHED and r[0].fate != Fate.NETFILTER_DROPPED
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and client.getpeername()[1] == 443
    ack = sent_by_dut(dut, lambda f: TCP in f and f[TCP].dport == 443 and f[TCP].flags == "A")[TCP]
    assert ack.ack == 5001                                            # the DUT's stack took it: connected
    assert (r[0].ct, r[0].ct_reply) == (Ct.ESTABLISHED, True)
    assert r[0].ct_status == {"confirmed", "seen_reply"}             # confirmed when the SYN left; replied now
    client.close()


def test_segments_that_fit_no_connection_are_invalid(dut, inject):
    dut.listen(tcp=22)
    ip = IP(src=CLIENT, dst=dut.ip)
    seq, ack = handshake(dut, inject, ip, 40000)
    r = inject([ip / TCP(sport=40000, dport=22, flags="PA", seq=seq + (1 << 30), ack=ack) / b"x",  # far past the window
                ip / TCP(sport=40001, dport=22, flags="SF", seq=7),  # SYN+FIN: no TCP state allows it
                ip / TCP(sport=40002, dport=22, flags="R", seq=7),   # a reset of a connection that never was
                ip / TCP(sport=40000, dport=22, flags="PA", seq=seq, ack=ack) / b"in window"])
    assert [p.fate for p in r] == [Fate.NETFILTER_DROPPED] * 3 + [Fate.DELIVERED]
    assert [p.rule for p in r] == [INVALID] * 3 + [ESTABLISHED]       # the connection itself is unharmed
    assert all(p.answer is None for p in r)                           # dropped: nobody answers
    assert r.ct_states() == {Ct.INVALID: 3, Ct.ESTABLISHED: 1}
    assert len(r.where(ct="invalid")) == 3 and r.where(ct=Ct.INVALID).fates() == {Fate.NETFILTER_DROPPED: 3}


@pytest.mark.parametrize("loose", [1, 0])
def test_a_stray_ack_is_new_or_invalid_as_tcp_loose_says(dut, inject, loose):
    # net.netfilter.nf_conntrack_tcp_loose (1 by default): conntrack may pick a connection up in the
    # middle, from any ACK; with 0 only a SYN starts one, and a stray ACK belongs to nothing.
    dut.topology.dut.netns.sysctl("net.netfilter.nf_conntrack_tcp_loose", loose)
    dut.listen(tcp=22)
    r = inject(IP(src=CLIENT, dst=dut.ip) / TCP(sport=40000, dport=22, flags="A", seq=5, ack=7))
    if loose:  # a new connection, as far as conntrack knows: the SSH rule takes it, the socket resets it
        assert (r[0].rule, r[0].fate, r[0].answer) == (SSH4, Fate.DROPPED, "RST")
        assert r[0].ct == Ct.NEW
    else:
        assert (r[0].rule, r[0].fate, r[0].answer) == (INVALID, Fate.NETFILTER_DROPPED, None)
        assert r[0].ct == Ct.INVALID


def test_new_ssh_connections_are_rate_limited_per_source(dut, inject):
    # Twenty connection attempts from each of two sources at once, alternating: each source has its
    # own budget (a burst of 5), the rest meet the policy.
    dut.listen(tcp=22)
    a, b = "198.51.100.8", "198.51.100.9"
    r = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=40, vary={"src": [a, b], "sport": (41000, 41039)})
    for src in (a, b):
        mine = r.where(src=src)
        assert mine.fates() == {Fate.DELIVERED: 5, Fate.NETFILTER_DROPPED: 15}
        assert [p.rule for p in mine] == [SSH4] * 5 + ["policy drop"] * 15
    assert r.ct_states() == {Ct.NEW: 40}  # refused or not, every one was a new connection


def test_port_80_is_translated_to_the_web_service(dut, inject):
    web = dut.listen(tcp=8080)
    ip = IP(src=CLIENT, dst=dut.ip)
    direct = inject(ip / TCP(sport=40001, dport=8080, flags="S"))
    assert direct[0].rule == "policy drop"                            # 8080 itself is closed
    syn = inject(ip / TCP(sport=40000, dport=80, flags="S", seq=1000))
    assert syn[0].fate == Fate.DELIVERED and syn[0].socket == web.cookie and syn[0].rule == WEB
    server = syn_ack(dut, 40000)
    assert server.sport == 80                                         # translated back on the way out
    ack = inject(ip / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=server.seq + 1))
    assert ack[0].fate == Fate.DELIVERED and ack[0].rule == ESTABLISHED and web.accepted() == 1
    assert direct[0].nat == () and direct[0].ct == Ct.NEW and "dst_nat" not in direct[0].ct_status
    assert syn[0].nat == ("TCP.dport: 80 -> 8080 at nat prerouting",)
    assert syn[0].ct == Ct.NEW and "dst_nat" in syn[0].ct_status
    assert ack[0].nat == ("TCP.dport: 80 -> 8080 at nat prerouting",) and ack[0].ct == Ct.ESTABLISHED


def test_icmp_errors_about_the_hosts_own_traffic_are_related(dut, inject):
    resolver = dut.listen(udp=5353)
    resolver.sock.sendto(b"query", ("::ffff:198.51.100.53", 53))     # the host asks; nobody answers there
    query = IP(src=dut.ip, dst="198.51.100.53") / UDP(sport=5353, dport=53) / b"query"
    never = IP(src=dut.ip, dst="198.51.100.53") / UDP(sport=5354, dport=53) / b"query"  # never sent
    r = inject([IP(src="198.51.100.53", dst=dut.ip) / ICMP(type=3, code=3) / IPerror(bytes(q)[:28])
                for q in (query, never)] + [IP(src=CLIENT, dst=dut.ip) / ICMP()])
    assert [p.rule for p in r] == [ESTABLISHED, INVALID, "icmp type echo-request accept"]
    assert [p.fate for p in r] == [Fate.CONSUMED, Fate.NETFILTER_DROPPED, Fate.CONSUMED]  # the ping answered
    assert [p.ct for p in r] == [Ct.RELATED, Ct.INVALID, Ct.NEW]


def test_ping6_answered_neighbour_discovery_let_through(dut, inject):
    r = inject(IPv6(src=CLIENT6, dst=dut.ip6) / ICMPv6EchoRequest(), count=3)
    assert r.fates() == {Fate.CONSUMED: 3}
    assert r[0].rule == "icmpv6 type { echo-request, nd-neighbor-solicit, nd-neighbor-advert } accept"
    assert r.ct_states() == {Ct.NEW: 1, Ct.ESTABLISHED: 2}  # one echo flow (same id): the later ones belong to it
