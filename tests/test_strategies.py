"""Hypothesis strategies (pktassert/traffic/strategies.py): a planted off-by-one in a real XDP filter found
and shrunk to the one packet that shows it, packets that are byte for byte what inject(vary=) sends,
frames of every shape the kernel takes, and the errors a user can cause."""

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from pktassert import InjectError, LibbpfSource, Session, Verdict
from pktassert.netns.topology import DUT_IP
from pktassert.traffic import strategies

HERE = Path(__file__).resolve().parent / "boundaries"
PLANTED = LibbpfSource(HERE / "planted.bpf.c", "planted")  # meant to drop TCP 1000..1999; drops 2000 too
NO_DB = settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))  # no .hypothesis/ folder


@pytest.fixture(scope="module")
def planted():
    """The planted filter in the unit tier (the kernel runs it on each frame: BPF_PROG_TEST_RUN)."""
    with Session(tier="unit") as s:
        dut = s.dut(xdp=PLANTED)
        yield dut
        dut.close()


def _meant(p: Ether) -> Verdict:
    """What the filter was meant to do: TCP over IPv4 to ports 1000..1999 dropped."""
    return Verdict.DROP if IP in p and p[IP].proto == 6 and 1000 <= p[TCP].dport <= 1999 else Verdict.PASS


def _does(p: Ether) -> Verdict:
    """What it does (the off-by-one included), for frames of any shape: only IPv4 right after Ethernet is parsed."""
    outer = p.payload
    dropped = isinstance(outer, IP) and outer.proto == 6 and 1000 <= outer[TCP].dport <= 2000
    return Verdict.DROP if dropped else Verdict.PASS


def _outer(p: Ether) -> IP | IPv6:
    return next(layer for layer in p.iterpayloads() if isinstance(layer, (IP, IPv6)))


@pytest.mark.usefixtures("pktassert_ready")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF test runs (CAP_BPF, CAP_NET_ADMIN)")
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
class TestInTheKernel:
    def test_the_planted_off_by_one_is_found_and_shrunk_to_port_2000(self, planted):
        # 1 port in 65,536 shows the bug: found in a few hundred examples (a range draws, half the time, from
        # the values filters draw edges at: 2000 is one), and no other packet shows it.
        flows = strategies.packets(IP(dst=DUT_IP) / TCP(flags="S"), vary={"dport": (0, 65535)})
        found = find(flows, lambda p: planted.inject(p).verdict != _meant(p), settings=settings(NO_DB, max_examples=5000))
        assert found[TCP].dport == 2000
        assert planted.inject(found).verdict == Verdict.DROP and _meant(found) == Verdict.PASS
        sent = planted.inject(IP(dst=DUT_IP) / TCP(flags="S"), vary={"dport": [2000]})
        assert sent.frame(0) == bytes(found)  # the very packet inject(vary=) sends

    @given(p=strategies.packets(IP(dst=DUT_IP) / UDP(sport=5353) / Raw(b"abcdefgh"),
                                vary={"dport": (1, 65535), "IP.src": "198.51.100.0/24", "ttl": [64, 1, 255],
                                      "payload[2:4]": st.integers(0, 0xFFFF)}))
    @settings(NO_DB, max_examples=40)
    def test_each_packet_is_the_frame_inject_vary_sends(self, planted, p):
        values = {"dport": [p[UDP].dport], "IP.src": [p[IP].src], "ttl": [p[IP].ttl],
                  "payload[2:4]": [int.from_bytes(bytes(p[Raw])[2:4], "big")]}
        sent = planted.inject(IP(dst=DUT_IP) / UDP(sport=5353) / Raw(b"abcdefgh"), count=1, vary=values)
        assert sent.frame(0) == bytes(p)
        fresh = p.copy()
        del fresh[IP].chksum, fresh[UDP].chksum  # scapy computes them afresh: the same, so they were recomputed
        assert bytes(fresh) == bytes(p)

    @given(p=strategies.packets(IPv6(dst="2001:db8::1") / TCP(), vary={"size": (74, 300), "IPv6.src": "2001:db8:1::/120"}))
    @settings(NO_DB, max_examples=20)
    def test_sizes_and_ipv6_prefixes_too(self, planted, p):
        assert 74 <= len(bytes(p)) <= 300 and p[IPv6].src.startswith("2001:db8:1::")
        sent = planted.inject(IPv6(dst="2001:db8::1") / TCP(), vary={"size": [len(bytes(p))], "IPv6.src": [p[IPv6].src]})
        assert sent.frame(0) == bytes(p)

    def test_a_checksum_set_on_purpose_stays_as_inject_keeps_it(self, planted):
        bad = IP(dst=DUT_IP) / TCP(chksum=0x1234)
        p = find(strategies.packets(bad, vary={"dport": (1, 9)}), lambda p: p[TCP].dport == 7, settings=NO_DB)
        assert p[TCP].chksum == 0x1234 and planted.inject(bad, vary={"dport": [7]}).frame(0) == bytes(p)

    @pytest.mark.parametrize("shape", [Dot1Q, Dot1AD, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrFragment, GRE,
                                       VXLAN, "IP-in-IP", "IPv6-in-IP"])
    def test_frames_of_each_shape_are_taken_by_inject(self, planted, shape):
        has = {"IP-in-IP": lambda p: isinstance(_outer(p), IP) and isinstance(_outer(p).payload, IP),
               "IPv6-in-IP": lambda p: isinstance(_outer(p), IP) and isinstance(_outer(p).payload, IPv6)}.get(
            shape, lambda p: shape in p)
        p = find(strategies.frames(), has, settings=settings(NO_DB, max_examples=5000))
        sent = planted.inject(p)
        assert sent.frame(0) == bytes(p) and len(sent) == 1
        assert sent.verdict == _does(Ether(bytes(p)))

    @given(p=strategies.frames())
    @settings(NO_DB, max_examples=150)
    def test_every_frame_gets_the_verdict_the_filter_gives_it(self, planted, p):
        assert planted.inject(p).verdict == _does(Ether(bytes(p)))


def test_five_hundred_frames_generate_and_differ():
    seen: list[bytes] = []

    @given(strategies.frames())
    @settings(NO_DB, max_examples=500)
    def collect(p):
        seen.append(bytes(p))

    collect()
    assert len(seen) >= 500 and len(set(seen)) >= 450
    assert all(Ether(f)[IP if IP in Ether(f) else IPv6].dst in (DUT_IP, "2001:db8::1") for f in seen[:100])


def test_frames_never_ask_the_host_for_an_address():
    # Every MAC and IP address is set: building a frame resolves nothing in the root namespace.
    p = find(strategies.frames(), lambda p: VXLAN in p, settings=NO_DB)
    for layer in (p, p[VXLAN].payload):
        assert {"src", "dst"} <= set(layer.fields)
    assert all("src" in ip.fields for ip in p.iterpayloads() if isinstance(ip, (IP, IPv6)))


@pytest.mark.parametrize(("vary", "least", "shrunk"), [({"dport": [443, 80, 22]}, 0, 443),
                                                       ({"dport": (1000, 2000)}, 1500, 1500),
                                                       ({"dport": range(7000, 7010)}, 7005, 7005)])
def test_shrinking_goes_to_the_start_of_a_range_and_the_first_of_a_list(vary, least, shrunk):
    found = find(strategies.packets(IP(dst=DUT_IP) / TCP(), vary=vary), lambda p: p[TCP].dport >= least, settings=NO_DB)
    assert found[TCP].dport == shrunk
    assert find(strategies.packets(IP() / TCP(), vary={"IP.src": "198.51.100.0/24"}), lambda p: True,
                settings=NO_DB)[IP].src == "198.51.100.0"


@pytest.mark.parametrize(("vary", "said"), [
    ({"dprt": (1, 2)}, "the packet has no field 'dprt' that can be varied. Fix: one of this packet's fields"),
    ({"dport": (5, 1)}, "the range of TCP.dport is empty"),
    ({"dport": 70000}, "70000 does not fit TCP.dport, a 16-bit field"),
    ({"IP.src": "2001:db8::/64"}, "'2001:db8::/64' is an IPv6 prefix, not a value for IP.src"),
    ({"nope": st.integers()}, "no field 'nope'"),
    ({"size": (10, 20)}, "10 bytes is shorter than the headers"),
    ({"payload": [1, 2]}, "give the payloads as bytes"),
])
def test_a_bad_spec_names_the_field_and_the_fix(vary, said):
    with pytest.raises(InjectError) as e:
        strategies.packets(IP(dst=DUT_IP) / TCP(), vary=vary)
    assert said in str(e.value)  # flood.py's own message: the one inject(vary=) gives


def test_a_strategy_drawing_values_the_field_cannot_take_says_so_when_drawn():
    flows = strategies.packets(IP(dst=DUT_IP) / TCP(), vary={"dport": st.integers(70000, 70001)})
    with pytest.raises(InjectError, match="does not fit TCP.dport"):
        find(flows, lambda p: True, settings=NO_DB)


@pytest.mark.parametrize(("call", "said"), [
    (lambda: strategies.packets("IP()/TCP()"), "a str, not a packet. Fix: a scapy packet"),
    (lambda: strategies.packets(IP() / TCP(), vary=[("dport", 80)]), "packets(vary=[('dport', 80)]): a list. Fix:"),
    (lambda: strategies.frames(max_payload=-1), "frames(max_payload=-1): give the most payload bytes"),
    (lambda: strategies.frames(dst="2001:db8::1"), "frames(dst='2001:db8::1'): not an IPv4 address. Fix:"),
])
def test_other_bad_arguments(call, said):
    with pytest.raises(InjectError) as e:
        call()
    assert said in str(e.value)
