"""A real stateful host firewall under test: Alpine Linux's default /etc/nftables.nft ("Basic IPv4/IPv6
stateful firewall for server/workstation"; origin, commit and license in
tests/third_party/alpine-aports/README.md), its stated policy checked line by line through the DUT's
stack, with real connections: each packet's fate, the rule that decided it, and the connection state
conntrack had given it (``.ct``).

Loaded with one change, in memory: its last line, ``include "/etc/nftables.d/*.nft"`` (where an Alpine
host adds its own services), is left out, so no file of the machine running the tests joins the rule
set. The rule set flushes the ruleset first; pktassert loads it into the DUT's namespace only.

What the kernel does that the comments do not say, and the tests hold it to:
- "Accept ICMP" / "Accept basic IPv6 functionality" never decide a packet: an ICMP error about one of
  the host's connections is RELATED and taken by the rule before them; one about nothing, and an echo
  reply nobody asked for, are INVALID to conntrack and dropped as "invalid connections" first.
- "Accept max 1 ping per second" lets a burst of 5 through first (the kernel's default burst for a
  packet limit without one).
- Neighbour discovery and MLD are UNTRACKED (conntrack leaves them alone), so they reach their rules.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLQuery,
    ICMPv6ND_NS,
    IPerror6,
    IPv6,
)

from pktassert import DUT_IP, DUT_IP6, Ct, Fate

ALPINE = Path(__file__).parent / "third_party/alpine-aports/main/nftables/nftables.nft"
HOST_INCLUDE = 'include "/etc/nftables.d/*.nft"\n'


def alpine_rules() -> str:
    text = ALPINE.read_text()
    assert text.endswith(HOST_INCLUDE), "the vendored rule set no longer ends with the host's include line"
    return text[: -len(HOST_INCLUDE)]


pytestmark = pytest.mark.nftables(alpine_rules())

# The rules as nft prints them (comments included).
TRACKED = 'ct state { established, related } accept comment "Accept traffic originated from us"'
INVALID = 'ct state invalid drop comment "Drop invalid connections"'
AUTH = 'tcp dport 113 reject comment "Reject AUTH to make it fail fast"'
PING4 = 'ip protocol icmp icmp type echo-request limit rate 1/second accept comment "Accept max 1 ping per second"'
PING6 = ('ip6 nexthdr ipv6-icmp icmpv6 type echo-request limit rate 1/second accept '
         'comment "Accept max 1 ping per second"')
SLAAC = ('ip6 nexthdr ipv6-icmp ip6 hoplimit 255 icmpv6 type { nd-router-solicit, nd-router-advert, '
         'nd-neighbor-solicit, nd-neighbor-advert } accept comment "Allow IPv6 SLAAC"')
MLD = ('ip6 nexthdr ipv6-icmp icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, '
       'mld2-listener-report } ip6 saddr fe80::/10 accept comment "Allow IPv6 multicast listener discovery on link-local"')
POLICY = "policy drop"

# Remote hosts in documentation ranges: the DUT reaches them through the peer (its gateway), which
# does not forward, so the tests play them (and the peer's own stack never resets their connections).
SERVER, SERVER6 = "198.51.100.80", "2001:db8:5::80"
CLIENT, CLIENT6 = "198.51.100.7", "2001:db8:5::7"
FAMILIES = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])


def sent_by_dut(dut, wanted, timeout=2.0):
    """The first frame the DUT sent out (as the peer received it) that ``wanted`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [f for f in dut.received_by_peer() if wanted(f)]
        if found:
            return found[0]
    raise AssertionError(f"the DUT sent no such frame within {timeout} s")


@contextlib.contextmanager
def connection_out(dut, v6: bool):
    """The DUT connects out to SERVER:443 (a real socket in its namespace); yields the socket, the
    server's side of the headers, and the DUT's SYN as the peer received it."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    client = dut.topology.dut.netns.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        client.connect_ex((SERVER6 if v6 else SERVER, 443))
        syn = sent_by_dut(dut, lambda f: TCP in f and f[TCP].dport == 443 and f[TCP].flags == "S")[TCP]
        server = IPv6(src=SERVER6, dst=DUT_IP6) if v6 else IP(src=SERVER, dst=DUT_IP)
        yield client, server, syn
    finally:
        client.close()


@FAMILIES
def test_nothing_is_open_new_connections_are_dropped(dut, inject, v6):
    dut.listen(tcp=[22, 80, 443], udp=53)  # services listening do not open this firewall
    ip = IPv6(dst=DUT_IP6, src=CLIENT6) if v6 else IP(dst=DUT_IP, src=CLIENT)
    r = inject([ip / TCP(sport=40000 + port, dport=port, flags="S") for port in (22, 80, 443)] + [ip / UDP(dport=53)])
    assert r.fates() == {Fate.NETFILTER_DROPPED: 4} and r.reasons() == {"NETFILTER_DROP": 4}
    assert {p.rule for p in r} == {POLICY} and {p.answer for p in r} == {None}  # dropped silently
    assert r.ct_states() == {Ct.NEW: 4}


@FAMILIES
def test_auth_is_rejected_to_fail_fast(dut, inject, v6):
    ip = IPv6(dst=DUT_IP6, src=CLIENT6) if v6 else IP(dst=DUT_IP, src=CLIENT)
    r = inject(ip / TCP(sport=40000, dport=113, flags="S"))
    # icmpx port-unreachable: ICMP 3/3 for IPv4, ICMPv6 1/4 for IPv6
    assert (r[0].fate, r[0].rule, r[0].answer) == (Fate.NETFILTER_DROPPED, AUTH, "ICMP 1/4" if v6 else "ICMP 3/3")
    assert r[0].ct == Ct.NEW


@FAMILIES
def test_traffic_originated_from_us_comes_back(dut, inject, v6):
    with connection_out(dut, v6) as (client, server, syn):
        r = inject([server / TCP(sport=443, dport=syn.sport, flags="SA", seq=5000, ack=syn.seq + 1),
                    server / TCP(sport=443, dport=syn.sport, flags="PA", seq=5001, ack=syn.seq + 1) / b"hello"])
        assert [p.rule for p in r] == [TRACKED] * 2
        assert client.recv(100) == b"hello"                           # the connection is up, the data arrived
        assert sent_by_dut(dut, lambda f: TCP in f and f[TCP].dport == 443 and f[TCP].ack == 5006)  # and acknowledged
        assert r.ct_states() == {Ct.ESTABLISHED: 2} and all(p.ct_reply for p in r)  # the reply direction
        # The same server port from elsewhere, or a new connection to the DUT's port: nothing of ours.
        other = inject((IPv6(src=CLIENT6, dst=DUT_IP6) if v6 else IP(src=CLIENT, dst=DUT_IP))
                       / TCP(sport=443, dport=syn.sport, flags="S"))
        assert other[0].rule == POLICY and other[0].ct == Ct.NEW


@FAMILIES
def test_invalid_connections_are_dropped(dut, inject, v6):
    with connection_out(dut, v6) as (client, server, syn):
        up = inject(server / TCP(sport=443, dport=syn.sport, flags="SA", seq=5000, ack=syn.seq + 1))
        assert up[0].rule == TRACKED
        dport, ack = syn.sport, syn.seq + 1
        r = inject([server / TCP(sport=443, dport=dport, flags="PA", seq=5001 + (1 << 30), ack=ack) / b"x",  # past the window
                    server / TCP(sport=443, dport=dport + 1, flags="SF", seq=9),  # SYN+FIN
                    server / TCP(sport=443, dport=dport + 2, flags="R", seq=9),   # a reset of nothing
                    server / TCP(sport=443, dport=dport, flags="PA", seq=5001, ack=ack) / b"fine"])
        assert [p.rule for p in r] == [INVALID] * 3 + [TRACKED]
        assert [p.fate for p in r][:3] == [Fate.NETFILTER_DROPPED] * 3 and {p.answer for p in r[:3]} == {None}
        assert client.recv(100) == b"fine"                            # the connection survived the junk
        assert r.ct_states() == {Ct.INVALID: 3, Ct.ESTABLISHED: 1}
        assert r.where(ct=Ct.INVALID).fates() == {Fate.NETFILTER_DROPPED: 3}


def test_icmp_errors_about_our_traffic_are_related_others_invalid(dut, inject):
    resolver = dut.listen(udp=5353)
    resolver.sock.sendto(b"query", ("::ffff:198.51.100.53", 53))
    resolver.sock.sendto(b"query", ("2001:db8:5::53", 53))
    asked = IP(src=DUT_IP, dst="198.51.100.53") / UDP(sport=5353, dport=53) / b"query"
    asked6 = IPv6(src=DUT_IP6, dst="2001:db8:5::53") / UDP(sport=5353, dport=53) / b"query"
    never = IP(src=DUT_IP, dst="198.51.100.53") / UDP(sport=5354, dport=53) / b"query"
    never6 = IPv6(src=DUT_IP6, dst="2001:db8:5::53") / UDP(sport=5354, dport=53) / b"query"
    unreachable = IP(src="198.51.100.53", dst=DUT_IP) / ICMP(type=3, code=3)
    unreachable6 = IPv6(src="2001:db8:5::53", dst=DUT_IP6) / ICMPv6DestUnreach(code=4)
    r = inject([unreachable / IPerror(bytes(asked)[:28]), unreachable6 / IPerror6(bytes(asked6)[:48]),
                unreachable / IPerror(bytes(never)[:28]), unreachable6 / IPerror6(bytes(never6)[:48]),
                IP(src=CLIENT, dst=DUT_IP) / ICMP(type=0), IPv6(src=CLIENT6, dst=DUT_IP6) / ICMPv6EchoReply()])
    assert [p.rule for p in r] == [TRACKED] * 2 + [INVALID] * 4  # "Accept ICMP" never gets to decide
    assert r.fates() == {Fate.CONSUMED: 2, Fate.NETFILTER_DROPPED: 4}
    assert [p.ct for p in r] == [Ct.RELATED] * 2 + [Ct.INVALID] * 4


@FAMILIES
def test_ping_is_limited(dut, inject, v6):
    # Ten pings from ten hosts at once: the limit's burst of 5, then the policy.
    ping = IPv6(dst=DUT_IP6) / ICMPv6EchoRequest() if v6 else IP(dst=DUT_IP) / ICMP()
    r = inject(ping, count=10, vary={"src": "2001:db8:5::/64" if v6 else "198.51.100.0/24"})
    assert r.fates() == {Fate.CONSUMED: 5, Fate.NETFILTER_DROPPED: 5}
    assert [p.rule for p in r] == [PING6 if v6 else PING4] * 5 + [POLICY] * 5
    def echo_reply(f):
        return ICMPv6EchoReply in f if v6 else ICMP in f and f[ICMP].type == 0

    sent_by_dut(dut, echo_reply)
    assert len([f for f in dut.received_by_peer() if echo_reply(f)]) == 5  # the DUT answered the five
    assert r.ct_states() == {Ct.NEW: 10}


def test_slaac_and_link_local_mld_are_let_in_untracked(dut, inject):
    query = ICMPv6MLQuery()
    r = inject([IPv6(src="2001:db8::2", dst=DUT_IP6, hlim=255) / ICMPv6ND_NS(tgt=DUT_IP6),  # unicast solicitation (NUD)
                IPv6(src="2001:db8::2", dst=DUT_IP6, hlim=64) / ICMPv6ND_NS(tgt=DUT_IP6),  # not from the link
                IPv6(src="fe80::2", dst="ff02::1", hlim=1) / query,
                IPv6(src="2001:db8::2", dst="ff02::1", hlim=1) / query])                  # not link-local
    assert [p.rule for p in r] == [SLAAC, POLICY, MLD, POLICY]
    assert [p.fate for p in r] == [Fate.CONSUMED, Fate.NETFILTER_DROPPED, Fate.CONSUMED, Fate.NETFILTER_DROPPED]
    assert sent_by_dut(dut, lambda f: f.haslayer("ICMPv6ND_NA"))      # the DUT answered the solicitation
    assert r.ct_states() == {Ct.UNTRACKED: 4}


def test_localhost_traffic_is_accepted(dut, inject):
    # Loopback never crosses the veth: a connection inside the DUT to its own listener is the check
    # ("iifname lo accept"; without it the SYN would be NEW from lo and meet the policy).
    dut.listen(tcp=22)
    probe = dut.topology.dut.netns.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(("127.0.0.1", 22))
    finally:
        probe.close()
    # The same port from outside stays closed.
    r = inject(IP(src=CLIENT, dst=DUT_IP) / TCP(sport=40000, dport=22, flags="S"))
    assert r[0].rule == POLICY and r[0].ct == Ct.NEW
