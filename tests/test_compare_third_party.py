"""Real changes from public projects' histories (issue 22): the file before and after one commit,
vendored byte for byte in tests/third_party/ (its README.md names each file's repository, path and
commit), both run by pktassert.compare in the kernel, and the difference checked against what the
commit message says changed, and what it leaves as it was.

- dfinity/http-gateway-release, ``etc/nftables.conf`` (the IC HTTP gateway's firewall, Apache-2.0):
  commit 812f9387 "do not allow SSH on IPv4", and the same change as it landed on main, merge e7b2dd3b
  ("Merge pull request #24 ... fix: do not allow SSH on IPv4"), whose first parent lets the other
  gateways in unrestricted: live tier, the DUT's stack, each packet's fate and deciding rule.
- xdp-project/xdp-tutorial, ``packet-solutions/xdp_vlan02_kern.c``: commit ffba6492 "packet-solutions:
  xdp_vlan02_kern VLAN extraction missed bpf_ntohs()": every inner 802.1Q TCI (unit tier), and the
  frames around the change in the live tier.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from pktassert import DUT_IP, DUT_IP6, PEER_IP, Traffic, Verdict, compare
from pktassert.compare import Diff, Side
from pktassert.netns.topology import DUT_MAC, PEER_MAC

THIRD_PARTY = Path(__file__).resolve().parent / "third_party"

# ---------------------------------------------------------------------------------------------------
# dfinity/http-gateway-release: etc/nftables.conf

GATEWAY = THIRD_PARTY / "dfinity-http-gateway-release"
# The rule set's first lines: `include "/mnt/nftables/defs.ruleset"`, the definitions a deployment puts on
# the gateway's data disk (init.sh: "/mnt/nftables     nftables definitions"); the repository has none.
# The test writes its own, in documentation ranges, in place of that line (in memory: the vendored file
# stays as it is, and nothing is written under the host's /mnt).
DEFS_INCLUDE = 'include "/mnt/nftables/defs.ruleset"\n'
MONITORING, SSH_V6, GATEWAYS_V4, GATEWAYS_V6 = "2001:db8:1::/64", "2001:db8:2::/64", "203.0.113.0/28", "2001:db8:4::/64"
DEFS = (f"define monitoring_saddr = {MONITORING}\ndefine ssh_saddr = {SSH_V6}\n"
        f"define gw_saddr_v4 = {GATEWAYS_V4}\ndefine gw_saddr_v6 = {GATEWAYS_V6}\n")
SSH_V4_ACCEPT = "ct state new tcp dport 22 accept"  # "ct state new tcp dport { ssh } accept", as nft prints it
SSH_V6_ACCEPT = f"ip6 saddr {SSH_V6} ct state new tcp dport 22 accept"
# TCP flags to port 22 from one outside address: conntrack calls a SYN, and a bare ACK (a connection
# picked up midstream, nf_conntrack_tcp_loose), "new"; the rest cannot start a connection: "invalid".
NEW_FLAGS, INVALID_FLAGS = ("S", "A", "PA"), ("SA", "R", "RA", "F", "FA", "SF")
OUTSIDE_V4 = "203.0.113.99"  # outside GATEWAYS_V4


def gateway_rules(commit: str) -> Side:
    """etc/nftables.conf as it is at ``commit`` (vendored), with the deployment's definitions."""
    text = (GATEWAY / commit / "etc/nftables.conf").read_text()
    assert text.count(DEFS_INCLUDE) == 1, f"{commit}: the rule set no longer includes its definitions as it did"
    return Side(f"dfinity/http-gateway-release@{commit}:etc/nftables.conf", rules=text.replace(DEFS_INCLUDE, DEFS))


def ssh_v4_flags() -> Traffic:
    return Traffic.packets([IP(src=OUTSIDE_V4, dst=DUT_IP) / TCP(sport=40000 + i, dport=22, flags=f)
                            for i, f in enumerate(NEW_FLAGS + INVALID_FLAGS)])


def gateway_traffic() -> list[Traffic]:
    """What the commit says changed (IPv4 to port 22, over every port below 1024 and every TCP flag
    that starts or cannot start a connection), and what it leaves as it was: SSH over IPv6 from its
    allowed sources and from elsewhere, the monitoring ports, HTTPS, ICMP and ICMPv6 echo, UDP to 22."""
    return [
        # 0: SYN to every port below 1024, 4 from each of 256 sources (each source far below the rule
        #    set's per-source rate and connection limits)
        Traffic.flood(IP(dst=DUT_IP) / TCP(flags="S"), 1024, {"dport": (0, 1023), "src": "198.51.100.0/24"}),
        ssh_v4_flags(),                                                                                   # 1
        Traffic.flood(IPv6(dst=DUT_IP6) / TCP(dport=22, flags="S"), 64, {"src": "2001:db8:2::/122"}),     # 2
        Traffic.flood(IPv6(dst=DUT_IP6) / TCP(dport=22, flags="S"), 64, {"src": "2001:db8:3::/122"}),     # 3
        Traffic.flood(IPv6(dst=DUT_IP6, src="2001:db8:1::5") / TCP(flags="S"), 4,                         # 4
                      {"dport": [9100, 9314, 9315, 9321]}),
        Traffic.packets([IP(src=OUTSIDE_V4, dst=DUT_IP) / TCP(dport=443, flags="S"),                     # 5
                         IP(src=OUTSIDE_V4, dst=DUT_IP) / ICMP(),
                         IPv6(src="2001:db8:3::7", dst=DUT_IP6) / ICMPv6EchoRequest(),
                         IP(src=OUTSIDE_V4, dst=DUT_IP) / UDP(dport=22)]),
    ]


def joined(parts: list[Traffic]) -> Traffic:
    out = Traffic()
    for p in parts:
        out = out | p
    return out


def answers(diff: Diff, part: int) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """A's and B's (fate, rule) for each packet of one part of the traffic, in send order."""
    return tuple([(p.fate.name, p.rule) for p in caps[part]] for caps in (diff.a_captures, diff.b_captures))


def unchanged_policy(diff: Diff) -> None:
    """What both versions do alike, checked on each side: not only "no difference" (both could be wrong
    alike), but each packet's fate and rule as the rule set says. compare() runs no server: an accepted
    SYN meets a closed port, and the DUT's TCP stack answers it with a reset (ANSWERED)."""
    for part, fate, rule in ((2, "ANSWERED", SSH_V6_ACCEPT),
                             (3, "NETFILTER_DROPPED", "policy drop"),
                             (4, "ANSWERED", f"ip6 saddr {{ ::, {MONITORING} }} ct state new tcp dport "
                                             f"{{ 9100, 9314, 9315, 9321 }} accept")):
        for side in answers(diff, part):
            assert set(side) == {(fate, rule)}, (part, side)
    for side in answers(diff, 5):
        https, ping, ping6, udp22 = side
        assert https == ("ANSWERED", "ct state new tcp dport { 80, 443 } accept")
        assert ping[0] == ping6[0] == "CONSUMED" and ping[1].startswith("icmp type {") and ping6[1].startswith("icmpv6 type {")
        assert udp22 == ("NETFILTER_DROPPED", "policy drop")
    for side in answers(diff, 1):  # a packet conntrack calls invalid: dropped by both, before and after
        assert set(side[len(NEW_FLAGS):]) == {("NETFILTER_DROPPED", "ct state invalid drop")}, side


def differing_tcp(diff: Diff) -> list[tuple[str, str, int]]:
    """(source, TCP flags, destination port) of each differing packet, in send order."""
    return [(p[IP].src, str(p[TCP].flags), p[TCP].dport) for p in diff.packets()]


def test_gateway_commit_812f938_closes_ssh_on_ipv4_only():
    """dfinity/http-gateway-release 812f9387ea233dc2900e0d8024184c0a5d07665c "do not allow SSH on IPv4"
    (parent 68e48ebf841540fc4f825e49e64052b7fe4c1752): the IPv4 input chain's `ct state new tcp dport
    { ssh } accept` removed. So: IPv4 packets to port 22 that conntrack calls new (a SYN, or a bare ACK it
    picks up midstream) were accepted and are now dropped by the chain's policy; nothing else changes:
    SSH over IPv6 (from `ssh_saddr`), HTTP(S), ICMP, the monitoring ports and invalid packets alike."""
    parts = gateway_traffic()
    diff = compare(gateway_rules("68e48eb"), gateway_rules("812f938"), joined(parts))
    assert diff and diff.only(IP, TCP, dport=22) and len(diff) == 1 + len(NEW_FLAGS), diff
    assert differing_tcp(diff) == [("198.51.100.22", "S", 22)] + [(OUTSIDE_V4, f, 22) for f in NEW_FLAGS], str(diff)
    (change,) = diff.classes
    assert (change.a.fate, change.a.rule) == ("ANSWERED", SSH_V4_ACCEPT), str(diff)
    assert (change.b.fate, change.b.rule) == ("NETFILTER_DROPPED", "policy drop"), str(diff)
    assert change.fields == {"ethertype": "2048", "proto": "6", "dst": DUT_IP, "dport": "22", "len": "54"}, str(diff)
    unchanged_policy(diff)


def test_gateway_merge_e7b2dd3_closes_ssh_on_ipv4_but_not_to_the_other_gateways():
    """The same change as it landed on main: merge e7b2dd3b960dd8e4ea3859adcdfd053a8b771100 ("Merge pull
    request #24 from dfinity/rjb/block-ssh-on-ipv4 / fix: do not allow SSH on IPv4") against its first
    parent ee11692e8a475ed72b5e2e50a36e55da232724dc. There the input chain first accepts everything from
    the other gateways (`ip saddr { $gw_saddr_v4 } accept`, from 9609850 "update nftables.conf"), so the
    diff is narrower than the message: SSH on IPv4 is closed to everyone but the gateways."""
    parts = gateway_traffic() + [
        Traffic.flood(IP(dst=DUT_IP) / TCP(dport=22, flags="S"), 32, {"src": "203.0.113.0/27"}),       # 6
        Traffic.packets([IP(src="203.0.113.5", dst=DUT_IP) / TCP(sport=41000 + i, dport=22, flags=f)    # 7
                         for i, f in enumerate(NEW_FLAGS + INVALID_FLAGS)]),
    ]
    diff = compare(gateway_rules("ee11692"), gateway_rules("e7b2dd3"), joined(parts))
    assert diff and diff.only(IP, TCP, dport=22) and len(diff) == 1 + len(NEW_FLAGS) + 16, diff
    outside = [(f"203.0.113.{i}", "S", 22) for i in range(16, 32)]
    assert differing_tcp(diff) == [("198.51.100.22", "S", 22)] + [(OUTSIDE_V4, f, 22) for f in NEW_FLAGS] + outside
    assert not any(ipaddress.ip_address(src) in ipaddress.ip_network(GATEWAYS_V4) for src, _, _ in differing_tcp(diff))
    assert {(c.a.fate, c.a.rule, c.b.fate, c.b.rule) for c in diff.classes} == \
        {("ANSWERED", SSH_V4_ACCEPT, "NETFILTER_DROPPED", "policy drop")}, str(diff)
    unchanged_policy(diff)
    gateway_accept = ("ANSWERED", f"ip saddr {GATEWAYS_V4} accept")
    for side in answers(diff, 6):  # the gateways' SSH, before and after
        assert side[:16] == [gateway_accept] * 16, side
    for side in answers(diff, 7):  # ... whatever its flags: the gateways' rule comes before conntrack's
        assert {fate for fate, _ in side} <= {"ANSWERED", "DROPPED"} and {rule for _, rule in side} == {gateway_accept[1]}, side


# ---------------------------------------------------------------------------------------------------
# xdp-project/xdp-tutorial: packet-solutions/xdp_vlan02_kern.c

TUTORIAL = THIRD_PARTY / "xdp-tutorial-history"
VLAN02_BEFORE = TUTORIAL / "ec2be4e/packet-solutions/xdp_vlan02_kern.c"
VLAN02_AFTER = TUTORIAL / "ffba649/packet-solutions/xdp_vlan02_kern.c"
# Its project's build of the time (common/common.mk: clang -target bpf -D __BPF_TRACING__ $(BPF_CFLAGS) -Wall
# -Wno-unused-value -Wno-pointer-sign -Wno-compare-distinct-pointer-types -Werror -O2 -g), and the include
# shim tests/test_third_party.py uses for glibc's <gnu/stubs-32.h> (see tests/third_party/README.md).
TUTORIAL_2019_FLAGS = ("-D__BPF_TRACING__", "-Wall", "-Wno-unused-value", "-Wno-pointer-sign",
                       "-Wno-compare-distinct-pointer-types", "-Werror", f"-I{THIRD_PARTY / 'include-shim'}")
# A double-tagged frame (outer VLAN 100) whose inner TCI (bytes 18..19) each test sets.
DOUBLE = bytes(Ether(src=PEER_MAC, dst=DUT_MAC) / Dot1Q(vlan=100) / Dot1Q(vlan=0) / IP(src=PEER_IP, dst=DUT_IP)
               / UDP(sport=4000, dport=5000) / (b"x" * 8))
# What the program aborts on, `vlans.id[1] == 42`: after the fix, an inner tag whose VLAN ID is 42, any PCP/DEI;
# before it, the TCI read in host (little-endian) order, then masked with VLAN_VID_MASK (0x0fff): bytes
# 0x2a, 0xN0 on the wire, which is TCI 0x2aN0 (PCP 1, VID 0xaN0), never VID 42.
ABORTED_AFTER = {(pcp_dei << 12) | 42 for pcp_dei in range(16)}
ABORTED_BEFORE = {0x2A00 | (n << 4) for n in range(16)}


def inner_tci(frame: bytes) -> int:
    return int.from_bytes(frame[18:20], "big")


def double_tagged(tcis) -> list[bytes]:
    return [DOUBLE[:18] + tci.to_bytes(2, "big") + DOUBLE[20:] for tci in tcis]


def triple_tagged() -> list[bytes]:
    """A third tag: the program still looks at the second (vlans.id[1]), not the innermost."""
    return [bytes(Ether(src=PEER_MAC, dst=DUT_MAC) / Dot1Q(vlan=100) / Dot1Q(prio=p, vlan=v) / Dot1Q(vlan=42)
                  / IP(src=PEER_IP, dst=DUT_IP) / UDP(sport=4000, dport=5000)) for p, v in ((0, 42), (1, 0xA00), (0, 7))]


def aborted(capture) -> set[int]:
    sub = capture.where(verdict=Verdict.ABORTED)
    return {inner_tci(sub.frame(i)) for i in range(len(sub))}


def test_xdp_tutorial_ffba649_vlan_ids_in_host_order():
    """xdp-project/xdp-tutorial ffba6492e0a9c3721c3a2a0aee448ab2a7171cd0 "packet-solutions: xdp_vlan02_kern
    VLAN extraction missed bpf_ntohs()" (parent ec2be4e7f2b865c4b24beabdf60412dfbf29753f): `vlans->id[i] =
    vlh->h_vlan_TCI & VLAN_VID_MASK` became `bpf_ntohs(vlh->h_vlan_TCI) & VLAN_VID_MASK`. The program returns
    XDP_ABORTED when the second tag's VLAN ID is 42, so every one of the 65,536 inner TCIs of a double-tagged
    frame: those of VLAN 42 (16, any PCP/DEI) now abort and passed before; the 16 whose bytes read backwards
    made 42 aborted before and now pass; the other 65,504 pass in both."""
    traffic = Traffic.packets(double_tagged(range(65536))) | Traffic.packets(triple_tagged())
    diff = compare(VLAN02_BEFORE, VLAN02_AFTER, traffic, func="xdp_vlan_02", cflags=TUTORIAL_2019_FLAGS, tier="unit")
    assert diff and len(diff) == 32 + 2, diff
    assert diff.only(Dot1Q, lambda p: (p[Dot1Q:2].vlan == 42) != (bytes(p)[18] == 42 and bytes(p)[19] & 0x0F == 0)), diff
    assert sorted(inner_tci(bytes(p)) for p in diff.packets()) == sorted([*ABORTED_AFTER, *ABORTED_BEFORE, 42, 0x2A00])
    by_answer = {(c.a.verdict, c.b.verdict): c.count for c in diff.classes}
    assert by_answer == {("PASS", "ABORTED"): 17, ("ABORTED", "PASS"): 17}, str(diff)
    # Each side on its own, every packet: the double-tagged frames it aborts are exactly those above.
    before, after = diff.a_captures[0], diff.b_captures[0]
    assert aborted(before) == ABORTED_BEFORE and aborted(after) == ABORTED_AFTER
    assert before.count(Verdict.PASS) == after.count(Verdict.PASS) == 65536 - 16
    assert [inner_tci(f) for f in (diff.a_captures[1].where(verdict=Verdict.ABORTED).frame(0),
                                   diff.b_captures[1].where(verdict=Verdict.ABORTED).frame(0))] == [0x2A00, 42]


def test_xdp_tutorial_ffba649_live():
    """The same commit in the live tier, on the frames around the change: the aborted frames are dropped
    at XDP (FILTER_DROPPED); the passed ones go on into the DUT's stack, which has no VLAN device and drops
    them (DROPPED): the diff is the same 32 frames, with the same verdicts."""
    tcis = sorted(set(range(0x2A00, 0x2B00)) | ABORTED_AFTER | set(range(64)))
    diff = compare(VLAN02_BEFORE, VLAN02_AFTER, Traffic.packets(double_tagged(tcis)), func="xdp_vlan_02",
                   cflags=TUTORIAL_2019_FLAGS, tier="live")
    assert sorted(inner_tci(bytes(p)) for p in diff.packets()) == sorted(ABORTED_AFTER | ABORTED_BEFORE), diff
    answers_ = {(str(c.a), str(c.b)): c.count for c in diff.classes}
    assert answers_ == {("PASS / DROPPED", "ABORTED / FILTER_DROPPED"): 16,
                        ("ABORTED / FILTER_DROPPED", "PASS / DROPPED"): 16}, str(diff)
