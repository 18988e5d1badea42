"""The edge firewall (edge_firewall.nft) through the DUT's whole stack: which packets reach the
services' sockets, which rule stopped the rest, and the kernel's own reason."""

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP

from pktassert import Fate

pytestmark = pytest.mark.nftables("edge_firewall.nft")


def test_ssh_only_from_admin_net(dut, inject):
    dut.listen(tcp=22)
    r = inject(IP(src="203.0.113.9", dst=dut.ip) / TCP(dport=22, flags="S"), count=50,
               vary={"src": "203.0.113.0/24"})
    assert r.count(Fate.DELIVERED) == 0
    assert r.reasons() == {"NETFILTER_DROP": 50}                  # the kernel's own words, by name
    assert r.where(src="203.0.113.9")[0].rule == "tcp dport 22 ip saddr != 198.51.100.0/24 drop"
    admin = inject(IP(src="198.51.100.7", dst=dut.ip) / TCP(dport=22, flags="S"), count=5,
                   vary={"sport": (40000, 40004)})  # five connections (a repeated SYN is conntrack's business)
    assert admin.count(Fate.DELIVERED) == 5
    assert admin[0].rule == "tcp dport 22 ip saddr 198.51.100.0/24 accept"


def test_echo_rate_limited(dut, inject):
    # A ping sweep of twenty hosts at once: the burst of five gets through (the kernel answers
    # them), the rest meet the drop rule; each packet says which rule decided it.
    r = inject(IP(dst=dut.ip) / ICMP(), count=20, vary={"src": "203.0.113.0/24"})
    assert r.fates() == {Fate.CONSUMED: 5, Fate.NETFILTER_DROPPED: 15}
    assert [p.rule for p in r[:5]] == ["icmp type echo-request limit rate 10/second accept"] * 5  # as nft prints it
    assert {p.rule for p in r[5:]} == {"icmp type echo-request counter drop"}
    assert dut.nft.counters()["icmp type echo-request counter drop"] == 15


def test_https_open_everything_else_dropped_by_policy(dut, inject):
    dut.listen(tcp=[443, 8080])
    assert inject(IP(dst=dut.ip) / TCP(dport=443, flags="S"), count=3).fates() == {Fate.DELIVERED: 3}
    other = inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S"), count=3)
    assert other.fates() == {Fate.NETFILTER_DROPPED: 3}
    assert other[0].rule == "policy drop" and other[0].chain == "inet edge input"


def test_replies_to_the_hosts_own_connections_come_back(dut, inject):
    resolver = dut.listen(udp=5353)
    reply = IP(src=dut.peer.ip, dst=dut.ip) / UDP(sport=53, dport=5353) / b"answer"
    assert inject(reply).fates() == {Fate.NETFILTER_DROPPED: 1}     # nobody asked
    resolver.sock.sendto(b"query", ("::ffff:" + dut.peer.ip, 53))   # the host asks the peer
    r = inject(reply)
    assert r.fates() == {Fate.DELIVERED: 1} and r[0].rule == "ct state established,related accept"
    assert resolver.received() == [b"answer"]
