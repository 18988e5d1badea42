"""The egress guard (tc egress, libbpf): the host may not open connections to blocklisted ports.

Each test runs on the libbpf source and on the object `make -C examples` builds from it."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from pktassert import LibbpfSource, ObjectFile, TcVerdict

HERE = Path(__file__).parent
ALLOW_MARK = 0x51


@pytest.fixture(params=["source", "object"])
def tc_program(request):
    """The filter in each form, attached at egress (this overrides pktassert's fixture)."""
    if request.param == "source":
        return LibbpfSource(HERE / "egress_guard.bpf.c", "egress_guard", hook="tc", direction="egress")
    return ObjectFile(HERE / "build" / "egress_guard.bpf.o", "egress_guard", hook="tc", direction="egress")


def test_outbound_connections_to_a_blocked_port_dropped(tc, inject):
    tc.map("blocked_dports")[4444] = 1
    out = inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S"), count=100, vary={"sport": (40000, 40099)})
    assert out.count(TcVerdict.SHOT) == 100
    assert inject.from_dut(IP(dst=tc.peer.ip) / TCP(dport=443, flags="S")).verdict == TcVerdict.OK
    assert tc.map("blocked_count")[0].sum() == 100
    if tc.tier == "live":   # what left the DUT: the 443 SYN only
        assert [p[TCP].dport for p in tc.received_by_peer() if TCP in p] == [443]


def test_an_empty_blocklist_blocks_nothing(tc, inject):
    # Fresh state: the port the previous test blocked is not blocked here.
    out = inject.from_dut([IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S"), IP(dst=tc.peer.ip) / UDP(dport=4444)])
    assert out.verdicts == [TcVerdict.OK, TcVerdict.OK]


def test_replies_and_allow_listed_traffic_go_out(tc, inject):
    tc.map("blocked_dports")[4444] = 1
    reply = IP(dst=tc.peer.ip) / TCP(sport=8080, dport=4444, flags="SA")
    assert inject.from_dut(reply).verdict == TcVerdict.OK
    syn = IP(dst=tc.peer.ip) / TCP(dport=4444, flags="S")
    assert inject.from_dut(syn, mark=ALLOW_MARK).verdict == TcVerdict.OK
    assert inject.from_dut(syn).verdict == TcVerdict.SHOT


def test_udp_and_ipv6_blocked_too(tc, inject):
    tc.map("blocked_dports")[53] = 1
    out = inject.from_dut([IP(dst=tc.peer.ip) / UDP(dport=53), IPv6(dst=tc.peer.ip6) / UDP(dport=53),
                           IPv6(dst=tc.peer.ip6) / TCP(dport=53, flags="S"), IP(dst=tc.peer.ip) / UDP(dport=54)])
    assert out.verdicts == [TcVerdict.SHOT, TcVerdict.SHOT, TcVerdict.SHOT, TcVerdict.OK]
