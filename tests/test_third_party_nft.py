"""A real distribution firewall under test: Arch Linux's default /etc/nftables.conf (origin in
tests/third_party/README.md), each line of its stated policy checked packet by packet through the
DUT's stack, with the rule that decided and the kernel's reason."""

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from pktassert import Fate

RULES = Path(__file__).parent / "third_party/archlinux-packages/nftables/trunk/nftables.conf"
pytestmark = pytest.mark.nftables(str(RULES))


def test_ssh_allowed(dut, inject):
    sshd = dut.listen(tcp=22)
    r = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=10, vary={"src": "198.51.100.0/24"})
    assert r.fates() == {Fate.DELIVERED: 10} and {p.socket for p in r} == {sshd.cookie}
    assert {p.rule for p in r} == {"tcp dport 22 accept"}


def test_everything_else_rejected_with_port_unreachable(dut, inject):
    dut.listen(tcp=80, udp=53)  # a service listening does not open the firewall
    for probe in (TCP(dport=80, flags="S"), UDP(dport=53)):
        r = inject(IP(dst=dut.ip) / probe, count=3, vary={"src": "203.0.113.0/24"})
        assert r.fates() == {Fate.NETFILTER_DROPPED: 3} and r.reasons() == {"NETFILTER_DROP": 3}
        assert {(p.rule, p.answer) for p in r} == {("reject", "ICMP 3/3")}  # as nft prints it (port-unreachable: the default)


def test_icmp_and_icmpv6_allowed(dut, inject):
    v4 = inject(IP(dst=dut.ip) / ICMP(), count=3, vary={"src": "198.51.100.0/24"})
    assert v4.fates() == {Fate.CONSUMED: 3} and v4[0].rule == "ip protocol icmp accept"
    v6 = inject(IPv6(dst=dut.topology.dut.ip6) / ICMPv6EchoRequest(), count=3)
    assert v6.fates() == {Fate.CONSUMED: 3} and v6[0].rule == "ip6 nexthdr ipv6-icmp accept"


def test_invalid_connections_dropped_early(dut, inject):
    dut.listen(tcp=22)
    r = inject(IP(dst=dut.ip) / TCP(dport=22, flags="SF"), count=3)  # SYN+FIN: no TCP state allows it
    assert r.fates() == {Fate.NETFILTER_DROPPED: 3} and r[0].rule == "ct state invalid drop"
    assert r[0].answer is None  # dropped, not rejected: the scanner hears nothing


def test_tracked_connections_come_back_in(dut, inject):
    resolver = dut.listen(udp=5353)
    reply = IP(src=dut.peer.ip, dst=dut.ip) / UDP(sport=53, dport=5353) / b"answer"
    assert inject(reply)[0].rule == "reject"   # nobody asked
    resolver.sock.sendto(b"query", ("::ffff:" + dut.peer.ip, 53))
    r = inject(reply)
    assert r.fates() == {Fate.DELIVERED: 1} and r[0].rule == "ct state { established, related } accept"
