"""What the DUT sends (inject.from_dut through a tc egress filter) has fates too: sent on the wire, or
dropped by the filter. Oracle: what arrived at the peer (the receiver there), packet by packet."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Fate, LibbpfSource, TcVerdict

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def tc_program():
    return LibbpfSource(EXAMPLES / "egress_guard.bpf.c", "egress_guard", hook="tc", direction="egress")


@pytest.mark.parametrize("tier", ["live"], indirect=True)
def test_a_packet_the_dut_sends_is_sent_on_the_wire_or_dropped_by_the_filter(dut, inject):
    dut.map("blocked_dports")[4444] = 1
    r = inject.from_dut([IP(dst=dut.peer.ip) / TCP(sport=40000 + i, dport=port, flags="S")
                         for i, port in enumerate((4444, 443, 4444, 80))])
    assert [p.verdict_enum() for p in r] == [TcVerdict.SHOT, TcVerdict.OK, TcVerdict.SHOT, TcVerdict.OK]
    assert [p.fate for p in r] == [Fate.FILTER_DROPPED, Fate.SENT, Fate.FILTER_DROPPED, Fate.SENT]
    assert r.fates() == {Fate.FILTER_DROPPED: 2, Fate.SENT: 2}
    # the oracle: the peer received exactly the packets called SENT
    arrived = [p[TCP].sport for p in dut.received_by_peer() if TCP in p]
    assert arrived == [int(p.capture.frame(p.pos)[34:36].hex(), 16) for p in r if p.fate == Fate.SENT]


@pytest.mark.parametrize("tier", ["live"], indirect=True)
def test_a_flood_the_dut_sends_is_counted_exactly(dut, inject):
    dut.map("blocked_dports")[4444] = 1
    r = inject.from_dut(IP(dst=dut.peer.ip) / TCP(dport=4444, flags="S"), count=2000, vary={"dport": (4443, 4445)},
                        keep=100)
    assert r.fates() == {Fate.FILTER_DROPPED: 667, Fate.SENT: 1333}

