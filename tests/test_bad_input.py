"""Bad input to inject(): each gives one InjectError that names the cause and the fix (pure logic, no kernel)."""

import struct

import numpy as np
import pytest
from scapy.layers.dot11 import Dot11
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import RawPcapWriter, wrpcap, wrpcapng

from pktassert import InjectError
from pktassert.frames import pcap
from pktassert.frames.convert import check_size, complete
from pktassert.frames.flood import Flood, build
from pktassert.netns import UNIT_DUT, UNIT_PEER

ETH = Ether(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01")
V4 = ETH / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(dport=80)
V6 = ETH / IPv6(src="2001:db8::2", dst="2001:db8::1") / TCP(dport=80)


def refused(match: str, call, *args) -> str:
    """The InjectError ``call(*args)`` raises; it must match and say how to fix it."""
    with pytest.raises(InjectError, match=match) as e:
        call(*args)
    assert "Fix:" in str(e.value), str(e.value)
    return str(e.value)


# 1. vary= values: the message names the field, its width or family, and a value that would do.

BAD_VALUES = [
    (V4, {"sport": -1}, r"-1 .*TCP\.sport, a 16-bit field.*0\.\.65535"),
    (V4, {"sport": (-1, 5)}, r"-1 .*TCP\.sport, a 16-bit field"),
    (V4, {"sport": [80, -2]}, r"-2 .*TCP\.sport, a 16-bit field"),
    (V4, {"sport": range(-3, 2)}, r"-3 .*TCP\.sport, a 16-bit field"),
    (V4, {"ttl": -1}, r"-1 .*IP\.ttl, an 8-bit field.*0\.\.255"),
    (V4, {"seq": -5}, r"-5 .*TCP\.seq, a 32-bit field"),
    (V4, {"sport": 1.5}, r"1\.5 .*TCP\.sport, a 16-bit field"),
    (V4, {"sport": "http"}, r"'http' .*TCP\.sport, a 16-bit field"),
    (V4, {"ttl": "abc"}, r"'abc' .*IP\.ttl, an 8-bit field"),
    (V4, {"seq": "198.51.100.1"}, r"'198\.51\.100\.1' .*TCP\.seq, a 32-bit field"),
    (V4, {"sport": "198.51.100.0/24"}, r"prefix.*TCP\.sport, a 16-bit field"),
    (V4, {"src": "2001:db8::/120"}, r"IPv6 prefix.*IP\.src, an IPv4 address field.*198\.51\.100\.0/24"),
    (V4, {"src": "198.51.100.0/33"}, r"'198\.51\.100\.0/33' is not an address prefix.*IP\.src"),
    (V4, {"src": "2001:db8::5"}, r"IPv6 address.*IP\.src, an IPv4 address field"),
    (V4, {"src": ["198.51.100.1", "2001:db8::5"]}, r"IPv6 address.*IP\.src, an IPv4 address field"),
    (V4, {"dst": "not-an-address"}, r"'not-an-address' .*IP\.dst, an IPv4 address field"),
    (V4, {"src": -1}, r"-1 .*IP\.src, an IPv4 address field"),
    (V6, {"src": "198.51.100.0/24"}, r"IPv4 prefix.*IPv6\.src, an IPv6 address field.*2001:db8::/120"),
    (V6, {"dst": "198.51.100.1"}, r"IPv4 address.*IPv6\.dst, an IPv6 address field"),
    (V6, {"src": "2001:db8::/129"}, r"'2001:db8::/129' is not an address prefix.*IPv6\.src"),
    (V6, {"src": 1.0}, r"1\.0 .*IPv6\.src, an IPv6 address field"),
    (V4, {"Ether.src": "02:00:5e:00:53"}, r"'02:00:5e:00:53' .*Ether\.src, a MAC address field.*02:00:5e:00:53:01"),
    (V4, {"Ether.src": "198.51.100.0/24"}, r"prefix.*Ether\.src, a MAC address field"),
]


@pytest.mark.parametrize("pkt, vary, match", BAD_VALUES, ids=[f"{p[IP if IP in p else IPv6].name}-{v}" for p, v, _ in BAD_VALUES])
def test_vary_value_refused(pkt, vary, match):
    msg = refused(match, build, pkt, 4, vary)
    assert "e.g." in msg and msg.count("vary=") == 1, msg


def test_vary_values_checked_before_a_flood_is_sent():
    # Flood checks its first row at once: a bad value is refused before anything goes out.
    refused(r"-1 .*TCP\.sport", Flood, V4, 100, {"sport": (-1, 5)})
    refused(r"-2 .*'size'", Flood, V4, 100, {"size": [100, -2]})


def test_good_vary_values_still_work():
    rows = build(V6, 4, {"src": "2001:db8:5::/126", "dst": "2001:db8::9", "sport": (0, 1)})
    assert [Ether(r.tobytes())[IPv6].src for r in rows] == [f"2001:db8:5::{i or ''}" for i in range(4)]
    rows = build(V4, 2, {"Ether.src": ["02:00:5e:00:53:07", 0x02005E005308], "sport": np.uint16(7)})
    assert [Ether(r.tobytes()).src for r in rows] == ["02:00:5e:00:53:07", "02:00:5e:00:53:08"]


# 2. Scapy packets that are not Ethernet frames and that Ether does not carry.

@pytest.mark.parametrize("pkt", [Dot11(), Raw(b"x"), TCP(), UDP() / b"payload"], ids=lambda p: p.__class__.__name__)
def test_packet_ether_cannot_carry_is_refused(pkt):
    msg = refused(rf"{type(pkt).__name__}.* Ether\(\)/", complete, pkt, UNIT_PEER, UNIT_DUT)
    assert "0x9000" in msg and "IP" in msg


@pytest.mark.parametrize("pkt, ethertype", [
    (IP(dst="192.0.2.1") / TCP(), 0x0800),
    (IPv6(dst="2001:db8::1") / UDP(), 0x86DD),
    (ARP(pdst="192.0.2.1"), 0x0806),
    (Dot1Q(vlan=5) / IP(dst="192.0.2.1"), 0x8100),
    (Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP(dst="192.0.2.1"), 0x88A8),
    (Ether(type=0x88B5) / b"local experimental", 0x88B5),
], ids=["IP", "IPv6", "ARP", "Dot1Q", "Dot1AD", "Ether"])
def test_packets_ether_carries_are_completed(pkt, ethertype):
    frame = Ether(bytes(complete(pkt, UNIT_PEER, UNIT_DUT)))
    assert frame.type == ethertype
    assert (frame.src, frame.dst) == (UNIT_PEER.mac, UNIT_DUT.mac)


# 3. Captures: cut records, truncated files, runt frames.

FRAMES = [ETH / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(dport=53 + i) / (b"q" * 20) for i in range(3)]


def test_good_captures_read(tmp_path):
    for name, write in (("ok.pcap", wrpcap), ("ok.pcapng", wrpcapng)):
        write(str(tmp_path / name), FRAMES)
        frames, times = pcap.read(tmp_path / name)
        assert frames == [bytes(f) for f in FRAMES] and len(times) == 3


def test_snaplen_cut_frame_is_refused(tmp_path):
    cut = FRAMES[1].copy()
    cut.wirelen = len(cut) + 100   # recorded as captured with a snaplen: 100 bytes of it are missing
    for name, write in (("cut.pcap", wrpcap), ("cut.pcapng", wrpcapng)):
        write(str(tmp_path / name), [FRAMES[0], cut, FRAMES[2]])
        refused(rf"{name}: frame 1 .*62 of its 162 bytes.*snaplen", pcap.read, tmp_path / name)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("where", ["in-header", "in-data"])
def test_file_truncated_inside_a_record_is_refused(tmp_path, fmt, where):
    path = tmp_path / f"t.{fmt}"
    (wrpcap if fmt == "pcap" else wrpcapng)(str(path), FRAMES)
    data = path.read_bytes()
    # The last record's length: pcap's record header is 16 bytes; a pcapng block ends with its length.
    record = 16 + len(FRAMES[2]) if fmt == "pcap" else struct.unpack("<I", data[-4:])[0]
    keep = 5 if where == "in-header" else record - 10
    path.write_bytes(data[:len(data) - record + keep])
    msg = refused(rf"t\.{fmt}: .*cut short inside frame 2", pcap.read, path)
    assert "whole" in msg


def test_file_cut_inside_its_header_is_refused(tmp_path):
    path = tmp_path / "head.pcap"
    wrpcap(str(path), FRAMES)
    path.write_bytes(path.read_bytes()[:10])
    refused(r"head\.pcap: it starts as one, but is cut short inside its file header", pcap.read, path)


def test_runt_frame_is_refused(tmp_path):
    path = tmp_path / "runt.pcap"
    with RawPcapWriter(str(path), linktype=1) as w:
        w.write(bytes(FRAMES[0]))
        w.write(b"\x02\x00\x5e\x00\x53\x01abc")   # 9 bytes
    refused(r"runt\.pcap: frame 1 \(Wireshark's No\. 2\) is 9 bytes, shorter than an Ethernet header \(14\)", pcap.read, path)


def test_capture_of_only_a_header_is_refused(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    refused(r"empty\.pcap holds no frames", pcap.read, path)


# 4. Frame sizes: the MTU limits the packet after the Ethernet header and VLAN tags.

def frame_of(ip_len: int, tags=()) -> bytes:
    pkt = ETH
    for tag in tags:
        pkt = pkt / tag
    return bytes(pkt / IP(src="192.0.2.2", dst="192.0.2.1") / UDP() / bytes(ip_len - 28))


@pytest.mark.parametrize("ip_len, tags", [
    (1500, ()), (1500, (Dot1Q(vlan=5),)), (1496, (Dot1AD(vlan=5), Dot1Q(vlan=6))), (46, ()),
])
def test_frame_sizes_the_link_takes(ip_len, tags):
    frame = frame_of(ip_len, tags)
    check_size([frame], 1500)
    check_size(np.tile(np.frombuffer(frame, np.uint8), (3, 1)), 1500)


@pytest.mark.parametrize("ip_len, tags, match", [
    (1501, (), r"1515-byte frame; the DUT link's MTU is 1500.*1501 bytes after the Ethernet header.* 1 byte over"),
    (1501, (Dot1Q(vlan=5),),
     r"1519-byte frame; the DUT link's MTU is 1500.*1501 bytes after the Ethernet header and 1 VLAN tag.* 1 byte over"),
    (1500, (Dot1AD(vlan=5), Dot1Q(vlan=6)), r"1522-byte frame; .*frames up to 1518 bytes.* 4 bytes over"),
])
def test_frame_sizes_refused(ip_len, tags, match):
    frame = frame_of(ip_len, tags)
    refused(match, check_size, [frame_of(100), frame], 1500)
    refused(match, check_size, np.tile(np.frombuffer(frame, np.uint8), (3, 1)), 1500)


def test_inner_ip_headers_get_the_peers_source_too():
    # Left unset, scapy would take an inner header's source from the host's own routes.
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    from pktassert.frames.convert import complete
    from pktassert.netns import UNIT_DUT, UNIT_PEER

    pkt = complete(IP(dst="192.0.2.1") / IP(dst="198.51.100.1") / UDP(), UNIT_PEER, UNIT_DUT)
    assert [h.src for h in pkt.iterpayloads() if type(h) is IP] == [UNIT_PEER.ip, UNIT_PEER.ip]
    pkt = complete(IPv6(dst="2001:db8::1") / IP(src="203.0.113.7", dst="198.51.100.1") / UDP(), UNIT_PEER, UNIT_DUT)
    assert (pkt[IPv6].src, pkt[IP].src) == (UNIT_PEER.ip6, "203.0.113.7")   # a source the test set stays
