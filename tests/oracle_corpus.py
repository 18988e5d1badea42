"""The oracle's corpus (tests/test_oracle.py): a seeded, scapy-built set of Ethernet frames, the same on
every run, aimed at what the example filters and the vendored programs decide on.

What is in it: IPv4 and IPv6 TCP, UDP and ICMP to the ports the examples care about (the blocklist's 23,
135, 445, 3389; 8080, 8443 and 8444 that tests add; the egress guard's 4444 and 53; the mark guard's
22 and 8443), SYN floods past syn_guard's per-source budget, echo floods past icmp_filter's, every ICMP
and ICMPv6 type the ICMP filter names (neighbour discovery with hop limit 255 and 64), payloads with
keyword_block's keyword inside and past its 64 scanned bytes, even and odd echo sequence numbers (the
xdp-tutorial parser), 802.1Q and QinQ tags, IPv6 with hop-by-hop, routing, destination-options and
fragment headers, IPv4 fragments and options, GRE, IPIP, 6in4 and VXLAN tunnels, ARP (gratuitous too),
multicast and broadcast destinations, other EtherTypes, near-MTU frames, and frames cut inside their
L3 or L4 headers.

Addresses are from the documentation ranges only; the DUT's are those of netns/topology.py. Frames
are unique (the live oracle matches what it sniffs to what it sent by content), at most 1,514 bytes
(the DUT link's MTU), and never shorter than what a tc test run accepts: 14 bytes, and an IPv4 or IPv6
packet's whole fixed header (34 and 54 bytes untagged), behind any VLAN tags too (tc ingress gets a
tagged frame without its outer tag).
"""

from __future__ import annotations

import functools
import random

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from pktassert.netns.topology import DUT_IP, DUT_IP6, DUT_MAC, PEER_IP, PEER_IP6, PEER_MAC

SEED = 19          # issue 19
SIZE = 1200        # frames; at least 1,000 by the issue
MAX_FRAME = 1514   # the DUT link's MTU (1,500) and the Ethernet header
ETH_HLEN = 14
WHOLE_L3 = {0x0800: 20, 0x86DD: 40}   # header a tc test run needs whole in an untagged frame

OTHER_MAC = "02:00:5e:00:53:42"        # a host no filter has state for
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST_MACS = ("01:00:5e:00:00:fb", "01:00:5e:00:00:01", "33:33:00:00:00:01", "33:33:00:00:00:16")
# Sources: a few fixed ones (floods from them cross per-source budgets), the rest anywhere in the ranges.
FLOODERS = ("198.51.100.7", "203.0.113.9")
ECHO_FLOODER = "198.51.100.8"
BLOCKED = (23, 135, 445, 3389)
PORTS = (*BLOCKED, 22, 53, 80, 443, 4444, 8080, 8443, 8444, 69, 123, 4789, 5353)
KEYWORD = b"/etc/passwd"
TCP_FLAGS = ("S", "S", "SA", "A", "PA", "R", "F", "FA", "", "SE")


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    # --- addresses and small parts -------------------------------------------------------------------------
    def src4(self) -> str:
        r = self.r
        return r.choice((PEER_IP, *FLOODERS, f"198.51.100.{r.randint(1, 254)}", f"203.0.113.{r.randint(1, 250)}"))

    def src6(self) -> str:
        r = self.r
        return r.choice((PEER_IP6, f"2001:db8:7::{r.randint(1, 0xffff):x}",
                         f"2001:db8:{r.randint(1, 0xfff):x}::{r.randint(1, 99)}"))

    def dst4(self) -> str:
        return self.r.choice((DUT_IP, DUT_IP, DUT_IP, "192.0.2.77", "203.0.113.200"))

    def dst6(self) -> str:
        return self.r.choice((DUT_IP6, DUT_IP6, DUT_IP6, "2001:db8::99", "ff02::1"))

    def ether(self) -> Ether:
        r = self.r
        src = PEER_MAC if r.random() < 0.8 else OTHER_MAC
        dst = DUT_MAC if r.random() < 0.8 else r.choice((BROADCAST, *MULTICAST_MACS))
        return Ether(src=src, dst=dst)

    def port(self) -> int:
        r = self.r
        return r.choice(PORTS) if r.random() < 0.6 else r.randint(1, 65535)

    def payload(self) -> bytes:
        r = self.r
        kind = r.random()
        if kind < 0.55:
            return bytes(r.getrandbits(8) for _ in range(r.choice((0, 0, 4, 16, 40, 200))))
        if kind < 0.8:   # the keyword inside keyword_block's 64 scanned bytes
            head = bytes(r.choice(b"GET POST RRQ ") for _ in range(r.randint(0, 50)))
            return head + KEYWORD + b" HTTP/1.1\r\n"
        if kind < 0.9:   # past them
            return b"X" * r.randint(54, 80) + KEYWORD
        return b"GET /etc/passw HTTP/1.1\r\n"   # one byte short of it

    def l4_tcp(self, dport: int | None = None, flags: str | None = None) -> Packet:
        r = self.r
        return TCP(sport=r.randint(1024, 65535), dport=self.port() if dport is None else dport,
                   flags=r.choice(TCP_FLAGS) if flags is None else flags, seq=r.getrandbits(32),
                   ack=r.getrandbits(32) if r.random() < 0.3 else 0, window=r.choice((0, 512, 65535))) / self.payload()

    def l4_udp(self) -> Packet:
        r = self.r
        return UDP(sport=r.randint(1024, 65535), dport=self.port()) / self.payload()

    def icmp(self) -> Packet:
        r = self.r
        t, c = r.choice(((8, 0), (8, 0), (0, 0), (3, 4), (3, 1), (3, 3), (5, 1), (11, 0), (13, 0), (17, 0)))
        # Timestamps set: scapy would fill a timestamp request's with the clock.
        return ICMP(type=t, code=c, id=r.randint(0, 65535), seq=r.randint(0, 40), ts_ori=1, ts_rx=2,
                    ts_tx=3) / bytes(r.randint(0, 56))

    def icmp6(self) -> tuple[Packet, int]:
        r = self.r
        hlim = r.choice((255, 255, 64))
        msg = r.choice((
            ICMPv6EchoRequest(id=r.randint(0, 65535), seq=r.randint(0, 40)), ICMPv6EchoReply(seq=r.randint(0, 40)),
            ICMPv6PacketTooBig(mtu=1280), ICMPv6ND_RS(), ICMPv6ND_RA(), ICMPv6ND_NS(tgt=DUT_IP6),
            ICMPv6ND_NA(tgt=PEER_IP6), ICMPv6ND_Redirect(tgt="2001:db8::3", dst="2001:db8:1::1"),
            ICMPv6DestUnreach(), ICMPv6TimeExceeded(), ICMPv6MLReport(mladdr="ff02::fb"), ICMPv6MLReport2()))
        return msg, hlim

    # --- network layers -----------------------------------------------------------------------------------------
    def ipv4(self) -> Packet:
        r = self.r
        ip = IP(src=self.src4(), dst=self.dst4(), ttl=r.choice((1, 64, 128, 255)), id=r.randint(0, 65535),
                tos=r.choice((0, 0, 46 << 2, 10 << 2 | 1, 3)))
        kind = r.random()
        if kind < 0.45:
            return ip / self.l4_tcp()
        if kind < 0.8:
            return ip / self.l4_udp()
        return ip / self.icmp()

    def ipv6(self, ext: bool = False) -> Packet:
        r = self.r
        ip6 = IPv6(src=self.src6(), dst=self.dst6(), hlim=64, tc=r.choice((0, 46 << 2, 10 << 2 | 1)),
                   fl=r.randint(0, 0xfffff))
        if ext:
            for _ in range(r.randint(1, 3)):
                ip6 = ip6 / r.choice((IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)]), IPv6ExtHdrDestOpt(),
                                      IPv6ExtHdrRouting(addresses=["2001:db8::5"], segleft=r.randint(0, 1)),
                                      IPv6ExtHdrFragment(offset=r.choice((0, 0, 185)), m=r.randint(0, 1),
                                                         id=r.getrandbits(32))))
        kind = r.random()
        if kind < 0.4:
            return ip6 / self.l4_tcp()
        if kind < 0.75:
            return ip6 / self.l4_udp()
        msg, hlim = self.icmp6()
        if not ext:
            ip6.hlim = hlim
        return ip6 / msg

    def fragment4(self) -> Packet:
        r = self.r
        inner = self.l4_tcp(dport=r.choice(BLOCKED + (80, 8080))) if r.random() < 0.5 else self.l4_udp()
        first = r.random() < 0.5
        return IP(src=self.src4(), dst=DUT_IP, id=r.randint(0, 65535), proto=6 if TCP in inner else 17,
                  flags="MF" if first or r.random() < 0.5 else 0, frag=0 if first else r.randint(1, 180)) / Raw(bytes(inner))

    def tunnel(self) -> Packet:
        r = self.r
        inner = r.choice((self.ipv4, self.ipv4, lambda: self.ipv6()))()
        kind = r.randint(0, 4)
        outer = IP(src=self.src4(), dst=DUT_IP, id=r.randint(0, 65535))
        proto = 0x0800 if IP in inner else 0x86DD
        if kind == 0:
            return outer / GRE(proto=proto) / inner
        if kind == 1:
            return outer / GRE(chksum_present=1, key_present=1, key=r.getrandbits(32), proto=proto) / inner
        if kind == 2:   # IPIP or 6in4
            return outer / inner
        if kind == 3:
            vxlan = UDP(sport=r.randint(1024, 65535), dport=4789) / VXLAN(vni=r.randint(1, 0xffffff))
            return outer / vxlan / self.ether() / inner
        return IPv6(src=self.src6(), dst=DUT_IP6) / GRE(proto=proto) / inner

    def l3(self) -> Packet:
        r = self.r
        kind = r.random()
        if kind < 0.4:
            return self.ipv4()
        if kind < 0.6:
            return self.ipv6()
        if kind < 0.72:
            return self.ipv6(ext=True)
        if kind < 0.8:
            return self.fragment4()
        if kind < 0.9:
            return self.tunnel()
        if kind < 0.95:   # IPv4 options (ihl > 5)
            return IP(src=self.src4(), dst=DUT_IP, options=[IPOption_Router_Alert()]) / r.choice((self.l4_tcp, self.l4_udp))()
        return self.ipv4()

    # --- frames ---------------------------------------------------------------------------------------------------
    def tagged(self, l3: Packet) -> Packet:
        r = self.r
        eth = self.ether()
        vid = r.randint(1, 4094)
        if r.random() < 0.6:
            return eth / Dot1Q(vlan=vid, prio=r.randint(0, 7)) / l3
        outer = Dot1AD(vlan=vid) if r.random() < 0.6 else Dot1Q(vlan=vid)   # QinQ: 802.1ad or 802.1Q outside
        return eth / outer / Dot1Q(vlan=r.randint(1, 4094)) / l3

    def other(self) -> Packet:
        r = self.r
        kind = r.randint(0, 3)
        if kind == 0:
            return Ether(src=PEER_MAC, dst=BROADCAST) / ARP(psrc=self.src4(), pdst=DUT_IP)
        if kind == 1:   # gratuitous: sender and target address the same
            mac = r.choice((PEER_MAC, OTHER_MAC))
            ip = self.src4()
            return Ether(src=mac, dst=BROADCAST) / ARP(hwsrc=mac, psrc=ip, pdst=ip)
        if kind == 2:
            return Ether(src=PEER_MAC, dst="01:80:c2:00:00:0e", type=0x88CC) / bytes(r.getrandbits(8) for _ in range(40))
        return Ether(src=PEER_MAC, dst=DUT_MAC, type=r.choice((0x9000, 0x88B5, 0x0842))) / bytes(r.randint(0, 60))

    def frame(self) -> bytes:
        r = self.r
        kind = r.random()
        if kind < 0.72:
            return bytes(self.ether() / self.l3())
        if kind < 0.92:
            return bytes(self.tagged(self.l3()))
        return bytes(self.other())


def _floods(b: _Builder) -> list[bytes]:
    """SYNs to syn_guard's port 80 past its budget of 64 per source; echo requests past icmp_filter's 100."""
    r = b.r
    out = []
    for src in FLOODERS:
        for _ in range(70):
            out.append(bytes(Ether(src=PEER_MAC, dst=DUT_MAC) / IP(src=src, dst=DUT_IP, id=r.randint(0, 65535))
                             / TCP(sport=r.randint(1024, 65535), dport=80, flags="S", seq=r.getrandbits(32))))
    for seq in range(110):
        out.append(bytes(Ether(src=PEER_MAC, dst=DUT_MAC) / IP(src=ECHO_FLOODER, dst=DUT_IP) / ICMP(type=8, id=7, seq=seq)))
    return out


def _pinned() -> list[bytes]:
    """Frames every run has, whatever the draw: what the filters decide on, untagged, tagged (802.1Q, a
    priority tag with VLAN 0, 802.1ad) and QinQ-tagged (802.1ad outside, and 802.1Q twice)."""
    tags = ((), (Dot1Q(vlan=100),), (Dot1Q(vlan=0, prio=5),), (Dot1AD(vlan=150),), (Dot1AD(vlan=200), Dot1Q(vlan=300)),
            (Dot1Q(vlan=400), Dot1Q(vlan=500)))
    l3s = [IP(src="198.51.100.53", dst=DUT_IP) / UDP(sport=5353, dport=53) / b"dns?",
           IP(src="198.51.100.53", dst=DUT_IP) / UDP(sport=5354, dport=4444),
           IPv6(src="2001:db8:53::1", dst=DUT_IP6) / UDP(sport=5353, dport=53)]
    l3s += [IP(src="198.51.100.22", dst=DUT_IP) / TCP(sport=40000 + p, dport=p, flags="S") for p in (22, 23, 80, 445, 4444, 8443)]
    l3s += [IPv6(src="2001:db8:22::1", dst=DUT_IP6) / TCP(sport=41000 + p, dport=p, flags="S") for p in (22, 23)]
    l3s += [IP(src="198.51.100.99", dst=DUT_IP) / ICMP(type=8, id=99, seq=s) for s in (2, 3)]
    l3s += [IPv6(src="2001:db8:99::1", dst=DUT_IP6, hlim=255) / ICMPv6EchoRequest(id=99, seq=s) for s in (2, 3)]
    l3s += [IP(src="198.51.100.80", dst=DUT_IP) / UDP(sport=6000, dport=69) / (b"RRQ " + KEYWORD + b"\x00octet\x00")]
    out = []
    for tag in tags:
        for l3 in l3s:
            frame = Ether(src=PEER_MAC, dst=DUT_MAC)
            for t in tag:
                frame = frame / t.copy()
            out.append(bytes(frame / l3.copy()))
    return out


def l3_start(frame: bytes) -> tuple[int, int]:
    """(offset of the network header, its EtherType), after any VLAN tags."""
    at = ETH_HLEN
    kind = int.from_bytes(frame[12:14], "big")
    while kind in (0x8100, 0x88A8) and len(frame) >= at + 4:
        kind = int.from_bytes(frame[at + 2:at + 4], "big")
        at += 4
    return at, kind


def _truncated(b: _Builder, frame: bytes) -> bytes | None:
    """The frame cut inside its headers (IPv4 options, IPv6 extension headers, the transport header), as long
    as a tc test run still takes it: the fixed IPv4 or IPv6 header stays whole behind the tags too (a tc
    test run refuses less in an untagged frame, and tc ingress gets a tagged frame without its outer tag)."""
    r = b.r
    at, kind = l3_start(frame)
    if kind not in (0x0800, 0x86DD):
        return None
    low, high = at + WHOLE_L3[kind], min(len(frame) - 1, at + WHOLE_L3[kind] + 40)
    if high <= low:
        return None
    return frame[:r.randint(low, high)]


def _near_mtu(b: _Builder) -> list[bytes]:
    r = b.r
    out = []
    for _ in range(6):
        pkt = b.ether() / IP(src=b.src4(), dst=DUT_IP) / UDP(sport=r.randint(1024, 65535), dport=b.port())
        out.append(bytes(pkt / bytes(MAX_FRAME - len(pkt))))
    return out


@functools.cache
def corpus(seed: int = SEED, size: int = SIZE) -> tuple[bytes, ...]:
    """``size`` unique frames, in a seeded random order."""
    rng = random.Random(seed)
    b = _Builder(rng)
    frames: list[bytes] = _pinned() + _floods(b) + _near_mtu(b)
    seen = set(frames)
    for _ in range(size * 20):   # bounded: duplicates and oversized frames are redrawn
        if len(frames) >= size:
            break
        f = b.frame()
        if rng.random() < 0.12:
            cut = _truncated(b, f)
            f = cut if cut is not None else f
        if len(f) > MAX_FRAME or f in seen:
            continue
        seen.add(f)
        frames.append(f)
    rng.shuffle(frames)
    assert len(frames) == size and len(set(frames)) == size
    return tuple(frames)
