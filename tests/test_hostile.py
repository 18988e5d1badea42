"""Hostile frames: random bytes, truncated headers, IPv4 options, IPv6 extension chains, VLAN stacks,
empty payloads. Through both tiers every frame must get a verdict, the capture must decode it, and
the live verdict must equal the unit verdict for the same frame."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1Q, Ether

from pktassert import Verdict

pytestmark = [pytest.mark.xdp(str(Path(__file__).resolve().parent.parent / "examples" / "port_blocklist.c"),
                              func="port_blocklist"),
              pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)]

MACS = dict(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01")
L4 = {4: [lambda: TCP(dport=23, flags="S"), lambda: UDP(dport=445), lambda: ICMP(), lambda: TCP(dport=80)],
      6: [lambda: TCP(dport=3389), lambda: UDP(dport=53), lambda: ICMPv6EchoRequest()]}
EXT6 = [lambda: IPv6ExtHdrHopByHop(), lambda: IPv6ExtHdrDestOpt(), lambda: IPv6ExtHdrRouting(),
        lambda: IPv6ExtHdrFragment(offset=0), lambda: IPv6ExtHdrFragment(offset=7, m=1)]


@st.composite
def crafted(draw: st.DrawFn) -> bytes:
    pkt = Ether(**MACS)
    for _ in range(draw(st.integers(0, 4))):                       # VLAN stacks, deeper than we parse
        pkt = pkt / Dot1Q(vlan=draw(st.integers(0, 4095)))
    if draw(st.booleans()):
        opts = draw(st.lists(st.sampled_from([IPOption_NOP(), IPOption_RR()]), max_size=3))
        pkt = pkt / IP(src="198.51.100.9", dst="192.0.2.1", options=opts, frag=draw(st.sampled_from([0, 0, 185])))
        family = 4
    else:
        pkt = pkt / IPv6(src="2001:db8::9", dst="2001:db8::1")
        for ext in draw(st.lists(st.sampled_from(EXT6), max_size=7)):  # chains longer than we walk
            pkt = pkt / ext()
        family = 6
    if draw(st.booleans()):
        pkt = pkt / draw(st.sampled_from(L4[family]))()
    pkt = pkt / draw(st.binary(max_size=32))                       # empty payloads included
    frame = bytes(pkt)
    return frame[:draw(st.integers(14, len(frame)))]                # truncated anywhere past Ethernet


frames = st.lists(st.one_of(crafted(), st.binary(min_size=14, max_size=200)), min_size=1, max_size=24)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=frames)
def test_every_hostile_frame_gets_a_verdict(xdp, inject, batch):
    capture = inject(batch)
    assert capture.sent == capture.accounted == len(capture) == len(batch)
    assert all(v in (Verdict.DROP, Verdict.PASS) for v in capture.verdicts)
    assert [capture.frame(i) for i in range(len(batch))] == batch
    for i in range(len(batch)):
        assert capture.summary(i).startswith(f"packet #{i}: ")      # the decoder copes too
    capture.where(IP, dport=23).count()
    capture.where(IPv6, src="2001:db8::9").count()
    # The same frames run by the kernel on their own give the same verdicts.
    assert [xdp.run(f).verdict for f in batch] == capture.verdicts
