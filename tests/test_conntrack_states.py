"""Each packet's connection state as the rule set judged it (``r[i].ct``), its connection's status and
the NAT rewrite it met, from the kernel's own conntrack entry (the fate tracker's netfilter programs).
Oracles: the rule that decided (nftables' own trace: ``ct state`` rules), the kernel's conntrack
statistics, and what the DUT's stack sent back (a SYN-ACK's numbers complete the handshake)."""

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from pktassert import Ct, Fate, PktassertError
from pktassert.kernel.conntrack_stats import conntrack_stats

CLIENT = "203.0.113.7"  # not the peer's: the DUT's answers to it reach the peer, whose stack ignores them (no RST)

STATEFUL = """
table inet fw {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    ct state invalid drop
    tcp dport 22 ct state new accept
    udp dport 53 ct state new accept
  }
}
"""

NAT = STATEFUL + """
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 80 redirect to :22
    tcp dport 8080 dnat to 198.51.100.7:22
  }
  chain input {
    type nat hook input priority 100; policy accept;
    ip saddr 203.0.113.8 snat to 198.51.100.99
  }
}
"""

NO_CT = """
table inet fw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 23 drop
  }
}
"""


def _syn_ack(dut, sport: int):
    """The DUT's SYN-ACK to CLIENT:sport, as it arrived at the peer."""
    got = [f for f in dut.received_by_peer() if TCP in f and f[TCP].dport == sport and f[TCP].flags == "SA"]
    assert got, "the DUT sent no SYN-ACK"
    return got[-1][TCP]


def _handshake(dut, inject, sport: int = 40000):
    syn = inject(IP(src=CLIENT, dst=dut.ip) / TCP(sport=sport, dport=22, flags="S", seq=1000))
    sa = _syn_ack(dut, sport)
    ack = inject(IP(src=CLIENT, dst=dut.ip) / TCP(sport=sport, dport=22, flags="A", seq=1001, ack=sa.seq + 1))
    return syn, sa, ack


@pytest.mark.nftables(STATEFUL)
def test_a_handshake_from_the_peer_is_new_then_established(dut, inject):
    dut.listen(tcp=22)
    syn, sa, ack = _handshake(dut, inject)
    assert syn[0].ct == Ct.NEW and syn[0].rule == "tcp dport 22 ct state new accept"
    assert not syn[0].ct_reply and "confirmed" not in syn[0].ct_status  # conntrack confirms it after the rule set
    assert ack[0].ct == Ct.ESTABLISHED and ack[0].rule == "ct state established,related accept"
    assert {"confirmed", "seen_reply"} <= ack[0].ct_status
    data = inject(IP(src=CLIENT, dst=dut.ip) / TCP(sport=40000, dport=22, flags="PA", seq=1001, ack=sa.seq + 1) / b"hi")
    assert data[0].ct == Ct.ESTABLISHED and data[0].fate == Fate.DELIVERED  # to the accepted connection's socket
    assert "assured" in data[0].ct_status  # data both ways (the DUT acknowledged) made it assured
    assert data.ct_states() == {Ct.ESTABLISHED: 1} and data[0].nat == ()


@pytest.mark.nftables(STATEFUL)
def test_out_of_window_and_unsolicited_segments_are_invalid(dut, inject):
    dut.listen(tcp=22)
    _, sa, _ = _handshake(dut, inject, sport=40001)
    before = conntrack_stats(dut.topology.dut.ns)
    r = inject([
        IP(src=CLIENT, dst=dut.ip) / TCP(sport=40001, dport=22, flags="A", seq=1001 + 2**31, ack=sa.seq + 1) / b"x",
        IP(src=CLIENT, dst=dut.ip) / TCP(sport=40002, dport=22, flags="SF", seq=5),   # SYN+FIN: no valid state
        IP(src=CLIENT, dst=dut.ip) / TCP(sport=40001, dport=22, flags="A", seq=1001, ack=sa.seq + 1),  # in window
    ])
    invalid = r.where(ct="invalid")
    assert len(invalid) == 2 and [p.ct for p in r] == [Ct.INVALID, Ct.INVALID, Ct.ESTABLISHED]
    assert {p.rule for p in invalid} == {"ct state invalid drop"}
    assert {p.fate for p in invalid} == {Fate.NETFILTER_DROPPED}
    assert r[2].ct == Ct.ESTABLISHED
    assert r.ct_states() == {Ct.INVALID: 2, Ct.ESTABLISHED: 1}
    # the kernel's own count of invalid packets rose by as many
    assert conntrack_stats(dut.topology.dut.ns)["invalid"] - before["invalid"] == 2


@pytest.mark.nftables(STATEFUL)
def test_a_reply_to_the_duts_own_datagram_is_established_the_reply_way(dut, inject):
    import socket

    s = dut.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the DUT's own, with pktassert's delivery filter on it
    s.bind((dut.ip, 5353))
    s.sendto(b"query", (CLIENT, 53))  # out through its gateway, the peer
    r = inject([IP(src=CLIENT, dst=dut.ip) / UDP(sport=53, dport=5353) / b"answer",
                IP(src=CLIENT, dst=dut.ip) / UDP(sport=54, dport=5353) / b"not asked"])
    assert r[0].ct == Ct.ESTABLISHED and r[0].ct_reply and r[0].rule == "ct state established,related accept"
    cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), "little")  # SO_COOKIE
    assert r[0].fate == Fate.DELIVERED and r[0].socket == cookie
    assert r[1].ct == Ct.NEW and not r[1].ct_reply and r[1].rule == "policy drop"
    assert r[1].fate == Fate.NETFILTER_DROPPED
    assert s.recv(100) == b"answer"


@pytest.mark.nftables(NAT)
def test_a_redirect_and_a_dnat_are_reported_as_field_rewrites(dut, inject):
    with dut.topology.dut.netns.entered():
        dut.topology.dut.netns.ipr.addr("add", index=1, address="198.51.100.7", prefixlen=32)  # the DUT's lo
    sshd = dut.listen(tcp=22)
    r = inject([IP(src=CLIENT, dst=dut.ip) / TCP(sport=41000, dport=80, flags="S"),
                IP(src=CLIENT, dst=dut.ip) / TCP(sport=41001, dport=8080, flags="S"),
                IP(src=CLIENT, dst=dut.ip) / TCP(sport=41002, dport=22, flags="S")])
    assert r[0].nat == ("TCP.dport: 80 -> 22 at nat prerouting",)
    assert r[1].nat == (f"IP.dst: {dut.ip} -> 198.51.100.7 at nat prerouting", "TCP.dport: 8080 -> 22 at nat prerouting")
    assert r[2].nat == ()
    snat = inject(IP(src="203.0.113.8", dst=dut.ip) / TCP(sport=41003, dport=22, flags="S"))
    assert snat[0].nat == ("IP.src: 203.0.113.8 -> 198.51.100.99 at nat input",) and "src_nat" in snat[0].ct_status
    assert [p.fate for p in r] == [Fate.DELIVERED] * 3 and {p.socket for p in r} == {sshd.cookie}
    assert "dst_nat" in r[1].ct_status and r[1].ct == Ct.NEW


@pytest.mark.nftables(NO_CT)
def test_without_conntrack_in_the_namespace_no_packet_is_called_invalid(dut, inject):
    # No rule uses conntrack, so the kernel runs none in the DUT's namespace: a packet without a connection
    # is not "invalid" there (that would be a wrong answer to `ct state invalid`): conntrack never saw it.
    r = inject([IP(dst=dut.ip) / TCP(dport=23, flags="S"), IP(dst=dut.ip) / TCP(dport=24, flags="SF")])
    assert r.ct_states() == {Ct.NONE: 2}
    assert r[0].rule == "tcp dport 23 drop"


@pytest.mark.nftables(STATEFUL)
def test_a_flood_counts_every_packets_state(dut, inject):
    dut.listen(udp=53)
    r = inject(IP(src=CLIENT, dst=dut.ip) / UDP(sport=1, dport=53), count=20_000, vary={"sport": (1, 20_000)}, keep=100)
    assert r.ct_states() == {Ct.NEW: 20_000}  # every packet counted, though records were kept for 100
    assert r.rule_counts() == {("inet fw input", "udp dport 53 ct state new accept"): 20_000}
    assert len(r.where(ct=Ct.NEW)) == 100


def test_a_capture_without_a_rule_set_refuses_ct_with_the_fix(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=9))
    with pytest.raises(PktassertError, match="nftables"):
        r[0].ct


@pytest.mark.nftables(STATEFUL)
def test_where_ct_refuses_an_unknown_state(dut, inject):
    r = inject(IPv6(dst=dut.topology.dut.ip6) / UDP(dport=53))
    with pytest.raises(PktassertError, match="established"):
        r.where(ct="open")


def test_a_packet_decapsulated_by_a_tunnel_keeps_its_identity(dut, inject):
    # The DUT ends a VXLAN tunnel: its stack receives each packet twice (on the veth, then on pa_vx, the same
    # sk_buff); it is still the injected packet, taken (or not) by the socket behind the tunnel.
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    ns, mac = dut.topology.dut.netns, "02:00:00:00:00:42"
    ns.ipr.link("add", ifname="pa_vx", kind="vxlan", vxlan_id=42, vxlan_local=dut.ip, vxlan_port=4789, address=mac)
    index = ns.ipr.link_lookup(ifname="pa_vx")[0]
    ns.ipr.addr("add", index=index, address="198.51.100.1", prefixlen=24)
    ns.ipr.link("set", index=index, state="up")
    inner = dut.listen(udp=53)
    vxlan = Raw(bytes.fromhex("08000000" "00002a00"))  # flags I, VNI 42 (scapy's VXLAN layer writes GPE here)
    outer = IP(src=CLIENT, dst=dut.ip) / UDP(sport=5000, dport=4789) / vxlan
    r = inject([outer / Ether(dst=mac) / IP(src="198.51.100.9", dst="198.51.100.1") / UDP(dport=53) / b"in",
                outer / Ether(dst=mac) / IP(src="198.51.100.9", dst="198.51.100.1") / UDP(dport=54) / b"no"])
    assert r[0].fate == Fate.DELIVERED and r[0].socket == inner.cookie
    assert r[1].fate == Fate.ANSWERED and r[1].reason == "NO_SOCKET"  # the inner packet's own fate, by its tag
