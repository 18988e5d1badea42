"""The mark guard (tc ingress, bcc): unmarked traffic to the service ports is dropped."""

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from pktassert import TcVerdict

pytestmark = pytest.mark.tc("mark_guard.c", func="mark_guard")   # ingress by default


def test_unmarked_service_traffic_dropped(tc, inject):
    # Frames from the wire arrive unmarked (mark 0), in both tiers.
    result = inject([IP(dst=tc.ip) / TCP(dport=22, flags="S"), IP(dst=tc.ip) / TCP(dport=8443, flags="S"),
                     IP(dst=tc.ip) / TCP(dport=80, flags="S"), IPv6(dst=tc.ip6) / UDP(dport=8443)], mark=0)
    assert result.verdicts == [TcVerdict.SHOT, TcVerdict.SHOT, TcVerdict.OK, TcVerdict.SHOT]


def test_non_ip_frames_pass(tc, inject):
    arp = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=tc.ip)
    assert inject(arp).verdict == TcVerdict.OK


@pytest.mark.parametrize("tier", ["unit"], indirect=True)   # the mark is set by the sk_buff, in a test run
def test_only_the_trusted_mark_is_let_in(tc, inject):
    probe = IP(dst=tc.ip) / TCP(dport=22, flags="S")
    assert [inject(probe, mark=m).verdict for m in (7, 6, 0)] == [TcVerdict.OK, TcVerdict.SHOT, TcVerdict.SHOT]


def test_a_scan_of_the_service_port_is_dropped_whole(tc, inject):
    scan = inject(IP(src="203.0.113.5", dst=tc.ip) / TCP(dport=22, flags="S"), count=20_000,
                  vary={"sport": (1024, 65535), "src": "203.0.113.0/24"})
    assert scan.sent == scan.accounted == 20_000
    assert scan.count(TcVerdict.SHOT) == 20_000
    assert tc.counts()[TcVerdict.SHOT] == 20_000
