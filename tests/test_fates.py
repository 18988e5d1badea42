"""Each packet's fate through the DUT's whole stack (the dut fixture, live tier): every fate, each
shown to change when the rule, the filter or the socket that decides it changes."""

import socket
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6

from pktassert import PEER_IP, Fate, PktassertError, TcVerdict, Verdict

DROP_SSH = """
table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 22 ip saddr != 198.51.100.0/24 counter drop
  }
}
"""
ACCEPT_SSH = DROP_SSH.replace("counter drop", "counter accept")


@pytest.mark.parametrize("fate", [pytest.param(Fate.NETFILTER_DROPPED, marks=pytest.mark.nftables(DROP_SSH)),
                                  pytest.param(Fate.DELIVERED, marks=pytest.mark.nftables(ACCEPT_SSH))])
def test_netfilter_drop_or_delivery_follows_the_rule(dut, inject, fate):
    ssh = dut.listen(tcp=22)
    r = inject(IP(src="203.0.113.9", dst=dut.ip) / TCP(dport=22, flags="S"), count=20,
               vary={"src": "203.0.113.0/24"})
    assert r.fates() == {fate: 20}
    assert r.count(Verdict.PASS) == 20  # the XDP stage passed them all: the difference is netfilter's
    if fate is Fate.NETFILTER_DROPPED:
        assert r.reasons() == {"NETFILTER_DROP": 20}
        assert r[0].rule == "tcp dport 22 ip saddr != 198.51.100.0/24 counter drop"
        assert r[0].chain == "inet t input"
        assert dut.nft.counters() == {"tcp dport 22 ip saddr != 198.51.100.0/24 counter drop": 20}
    else:
        assert r.reasons() == {}
        assert {p.socket for p in r} == {ssh.cookie} and dut.listener(r[0].socket) is ssh


def test_closed_port_answered_open_port_delivered(dut, inject):
    r = inject(IP(dst=dut.ip) / TCP(dport=80, flags="S"), count=3)
    assert r.fates() == {Fate.ANSWERED: 3}
    assert (r[0].answer, r[0].reason) == ("RST", "NO_SOCKET")
    web = dut.listen(tcp=80)
    r = inject(IP(dst=dut.ip) / TCP(dport=80, flags="S"), count=3)
    assert r.fates() == {Fate.DELIVERED: 3} and r[2].socket == web.cookie and r[2].answer is None


def test_udp_datagrams_reach_the_socket_that_listens(dut, inject):
    dns = dut.listen(udp=53)
    r = inject(IP(dst=dut.ip) / UDP(dport=53) / b"query", count=4)
    assert r.fates() == {Fate.DELIVERED: 4}
    assert dns.received() == [b"query"] * 4
    r = inject(IP(dst=dut.ip) / UDP(dport=54) / b"query")
    assert r[0].fate == Fate.ANSWERED and r[0].answer == "ICMP 3/3" and r[0].reason == "NO_SOCKET"


def test_ipv6_to_the_same_socket(dut, inject):
    dns = dut.listen(udp=53)
    r = inject(IPv6(dst=dut.topology.dut.ip6) / UDP(dport=53) / b"six", count=2)
    assert r.fates() == {Fate.DELIVERED: 2} and dns.received() == [b"six", b"six"]


def test_raw_socket_gets_its_protocol(dut, inject):
    raw = dut.listen(raw=253)  # RFC 3692 experimental protocol: no handler in the kernel
    r = inject(IP(dst=dut.ip, proto=253) / (b"x" * 8), count=2)
    assert r.fates() == {Fate.DELIVERED: 2} and r[0].socket == raw.cookie
    assert len(raw.received()) == 2


def test_stack_drops_by_reason(dut, inject):
    dut.listen(tcp=22)
    bad = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S", chksum=0x1234), count=5)
    good = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=5)
    assert bad.fates() == {Fate.DROPPED: 5} and bad.reasons() == {"TCP_CSUM": 5}
    assert good.fates() == {Fate.DELIVERED: 5} and good.reasons() == {}
    r = inject(IP(dst=dut.ip, chksum=0x1234) / UDP(dport=53))
    assert r[0].fate == Fate.DROPPED and r[0].reason == "IP_CSUM"


def test_stack_answers_echo(dut, inject):
    r = inject(IP(dst=dut.ip) / ICMP(), count=3)
    assert r.fates() == {Fate.CONSUMED: 3} and r.reasons() == {}


def test_a_fragment_held_for_reassembly_is_unknown_never_guessed(dut, inject):
    r = inject(IP(dst=dut.ip, flags="MF", id=7) / UDP(dport=53) / (b"x" * 64))
    assert r[0].fate == Fate.UNKNOWN and r[0].reason is None


@pytest.mark.xdp("../examples/port_blocklist.bpf.c", func="port_blocklist")
def test_the_xdp_filter_decides_first(dut, inject):
    dut.listen(tcp=[22, 8080])
    r = inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S"), count=4)
    assert r.fates() == {Fate.DELIVERED: 4}
    dut.map("blocked_ports")[8080] = 1
    r = inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S"), count=4)
    assert r.fates() == {Fate.FILTER_DROPPED: 4} and r.count(Verdict.DROP) == 4 and r.reasons() == {}


@pytest.mark.tc("../examples/mark_guard.c", func="mark_guard")
def test_a_tc_drop_is_the_filters_with_the_kernels_reason(dut, inject):
    dut.listen(udp=[53, 8443])
    assert inject(IP(dst=dut.ip) / UDP(dport=53), count=3).fates() == {Fate.DELIVERED: 3}  # not a service port
    r = inject(IP(dst=dut.ip) / UDP(dport=8443), count=3)
    assert r.count(TcVerdict.SHOT) == 3
    assert r.fates() == {Fate.FILTER_DROPPED: 3} and r.reasons() == {"TC_INGRESS": 3}


def test_flood_fates_exact_for_every_packet(dut, inject):
    dns = dut.listen(udp=53)
    start = time.monotonic()
    r = inject(IP(dst=dut.ip) / UDP(dport=9), count=1_000_000, vary={"src": "198.51.100.0/24"}, keep=100_000)
    took = time.monotonic() - start
    assert r.sent == r.accounted == 1_000_000 and r.step == 10
    assert r.reasons() == {"NO_SOCKET": 1_000_000}
    fates = r.fates()
    assert set(fates) <= {Fate.ANSWERED, Fate.DROPPED} and sum(fates.values()) == 1_000_000
    # The kernel rate-limits its ICMP errors per second (icmp_msgs_per_sec 1000, burst 50): a bound by the
    # time the flood took, which is seconds here and minutes in a VM under TCG (tests/test_kernel_matrix.py).
    assert 0 < fates.get(Fate.ANSWERED, 0) <= 1000 * took + 50
    assert dns.received() == []


def test_other_traffic_in_the_dut_is_not_counted(dut, inject):
    dns = dut.listen(udp=53)
    noise = dut.topology.peer.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # The peer's own datagrams: same socket, not injected. Twenty: with ours they must fit the socket's
    # buffer, and on 6.1 each datagram through a veth with XDP takes a page (at 50, ours met SOCKET_RCVBUFF).
    for _ in range(20):
        noise.sendto(b"noise", (dut.ip, 53))
    r = inject(IP(dst=dut.ip) / UDP(dport=53) / b"ours", count=10)
    noise.close()
    assert r.fates() == {Fate.DELIVERED: 10}
    assert sorted(set(dns.received())) == [b"noise", b"ours"]


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
def test_unit_tier_has_no_fates_and_says_why(dut, inject):
    r = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"))
    assert r.verdict == Verdict.PASS  # the filter alone: that much the unit tier knows
    with pytest.raises(PktassertError, match="unit tier runs the filter alone"):
        r.count(Fate.DELIVERED)
    with pytest.raises(PktassertError, match="live tier"):
        r.reasons()
    with pytest.raises(PktassertError, match="live tier"):
        dut.listen(tcp=22)


@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.nftables(DROP_SSH)
def test_a_rule_set_in_the_unit_tier_says_so(tier, request):
    with pytest.raises(Exception, match="needs the live tier"):
        request.getfixturevalue("dut")


@pytest.mark.xdp("../examples/port_blocklist.bpf.c", func="port_blocklist")
def test_xdp_fixture_alone_has_no_fates(xdp, inject):
    r = inject(IP(dst=xdp.ip) / TCP(dport=22, flags="S"))
    with pytest.raises(PktassertError, match="Fix: ask for `dut`"):
        r[0].fate


@pytest.mark.xdp("int bounce(struct xdp_md *ctx) { return XDP_TX; }", func="bounce")
def test_a_frame_the_filter_sends_back_never_reaches_the_stack(dut, inject):
    dut.listen(udp=53)
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=5)
    assert r.fates() == {Fate.FILTER_SENT: 5} and r.count(Verdict.TX) == 5 and r.reasons() == {}


def test_a_reassembled_datagram_is_not_attributed_to_a_fragment(dut, inject):
    # The datagram reaches the socket, but in a buffer no injected packet had: never guessed.
    dns = dut.listen(udp=53)
    # src given: fragment() builds the packet, and scapy would take the source from this machine's routes
    # (in a VM with no network, 0.0.0.0: a martian the DUT drops).
    r = inject(fragment(IP(src=PEER_IP, dst=dut.ip, id=99) / UDP(dport=53) / (b"y" * 100), fragsize=64))
    assert [p.fate for p in r] == [Fate.CONSUMED, Fate.UNKNOWN]
    assert dns.received() == [b"y" * 100]


def test_answers_are_seen_at_the_peer(dut, inject):
    dut.listen(tcp=22)
    syn = inject(IP(dst=dut.ip) / TCP(sport=40001, dport=22, flags="S", seq=1000))
    closed = inject(IP(dst=dut.ip) / TCP(sport=40002, dport=80, flags="S", seq=2000))
    assert (syn[0].fate, closed[0].fate, closed[0].answer) == (Fate.DELIVERED, Fate.ANSWERED, "RST")
    replies = {(t.dport, str(t.flags), t.ack) for t in (f[TCP] for f in dut.received_by_peer() if TCP in f)}
    assert replies == {(40001, "SA", 1001), (40002, "RA", 2001)}


@pytest.mark.nftables(DROP_SSH)
def test_a_failed_fate_count_says_what_happened_instead(dut, inject):
    from pktassert.results.assertion import explain

    dut.listen(tcp=22)
    r = inject(IP(src="203.0.113.9", dst=dut.ip) / TCP(dport=22, flags="S"), count=5)
    lines = explain("==", r.count(Fate.DELIVERED), 5)
    assert lines[:3] == ["expected count(Fate.DELIVERED) == 5, got 0", "fates of these 5 packets: NETFILTER_DROPPED=5",
                         "the kernel's drop reasons: NETFILTER_DROP=5"]
    assert lines[3].startswith("  NETFILTER_DROP: netfilter dropped it")  # what the reason means, its usual cause
    assert lines[4].startswith("first packet that was not DELIVERED: packet #0: ")
    assert lines[4].endswith("-> NETFILTER_DROPPED (reason NETFILTER_DROP; rule 'tcp dport 22 ip saddr != "
                             "198.51.100.0/24 counter drop' in inet t input)")


def test_a_flood_the_stack_answers_is_accounted_for(dut, inject):
    # Each SYN to a closed port makes the DUT's stack answer with a RST (through the peer, its
    # gateway): twice the softirq work per frame. The engine's 64-frame bursts overran the DUT veth's
    # 256-frame ring then, and most of the flood was reported dropped by the veth; 16-frame bursts keep up.
    r = inject(IP(dst=dut.ip) / TCP(dport=80, flags="S"), count=1_000_000,
               vary={"src": "198.51.100.0/24", "sport": (1024, 65535)}, keep=100_000)
    assert r.sent == r.accounted == 1_000_000
    assert r.fates() == {Fate.ANSWERED: 1_000_000} and r.reasons() == {"NO_SOCKET": 1_000_000}


@pytest.mark.xdp("../examples/port_blocklist.bpf.c", func="port_blocklist")
@pytest.mark.tc("../examples/mark_guard.c", func="mark_guard")
def test_xdp_then_tc_each_stage_decides_its_packets(dut, inject):
    dut.listen(udp=[53, 8443])
    r = inject(IP(dst=dut.ip) / UDP(dport=8443), count=3)  # XDP passes it, tc drops it (unmarked)
    assert r.fates() == {Fate.FILTER_DROPPED: 3} and r.where(UDP)[0].stages == {"xdp": Verdict.PASS, "tc": TcVerdict.SHOT}
    assert inject(IP(dst=dut.ip) / UDP(dport=53), count=3).fates() == {Fate.DELIVERED: 3}
    r = inject(IP(dst=dut.ip) / UDP(dport=445), count=3)  # XDP drops it: tc never sees it
    assert r.fates() == {Fate.FILTER_DROPPED: 3} and r[0].stages == {"xdp": Verdict.DROP, "tc": None}
