"""flood.build: rows varied in numpy must be the frames scapy would have built, checksums included."""

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN

from pktassert import InjectError
from pktassert.frames.flood import Flood, build

ETH = Ether(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01")
SRC, DST = "192.0.2.2", "192.0.2.1"
SRC6, DST6 = "2001:db8::2", "2001:db8::1"


def rescored(row: np.ndarray, keep=()) -> bytes:
    """The row as scapy builds it when every checksum field is left for scapy to compute, except those
    of the layers in ``keep``: (class, n) for the n-th layer of that class, counting from 1."""
    pkt = Ether(row.tobytes())
    layer, seen = pkt, {}
    while layer:
        seen[type(layer)] = seen.get(type(layer), 0) + 1
        for name in ("chksum", "cksum"):
            if name in layer.fields and (type(layer), seen[type(layer)]) not in keep:
                delattr(layer, name)
        layer = layer.payload
    return bytes(pkt)


def assert_checksums(rows: np.ndarray, keep=()) -> None:
    for i, row in enumerate(rows):
        assert row.tobytes() == rescored(row, keep), f"row {i}: a checksum differs from scapy's"


def column(rows: np.ndarray, layer, field: str) -> list:
    return [getattr(Ether(row.tobytes())[layer], field) for row in rows]


def test_checker_catches_a_stale_checksum():
    # Guards every other test here: a row whose bytes changed without new checksums must fail.
    rows = build(ETH / IP(src=SRC, dst=DST) / TCP(dport=80), 2, None)
    rows[1, 14 + 12] ^= 1   # one bit of the IPv4 source
    assert rows[0].tobytes() == rescored(rows[0])
    assert rows[1].tobytes() != rescored(rows[1])


def test_no_vary_repeats_the_template():
    pkt = ETH / IP(src=SRC, dst=DST) / UDP(dport=53) / b"abc"
    rows = build(pkt, 3, None)
    assert rows.shape == (3, len(pkt))
    assert all(row.tobytes() == bytes(pkt) for row in rows)


def test_ipv4_tcp():
    pkt = ETH / IP(src=SRC, dst=DST) / TCP(sport=1, dport=80, flags="S")
    rows = build(pkt, 300, {"src": "198.51.100.0/24", "sport": (1024, 1123), "ttl": (1, 255)})
    assert_checksums(rows)
    assert column(rows, IP, "src")[:3] == ["198.51.100.0", "198.51.100.1", "198.51.100.2"]
    assert column(rows, IP, "src")[255:258] == ["198.51.100.255", "198.51.100.0", "198.51.100.1"]
    assert column(rows, TCP, "sport") == [1024 + i % 100 for i in range(300)]
    assert column(rows, IP, "ttl") == [1 + i % 255 for i in range(300)]
    assert set(column(rows, IP, "dst")) == {DST} and set(column(rows, TCP, "dport")) == {80}


def test_ipv4_udp_with_payload():
    # An odd payload length: the checksum's last 16-bit word is padded.
    pkt = ETH / IP(src=SRC, dst=DST) / UDP(sport=5000, dport=53) / (b"\x8f" * 31)
    rows = build(pkt, 40, {"dport": [53, 123, 5353], "dst": "203.0.113.128/29"})
    assert_checksums(rows)
    assert column(rows, UDP, "dport")[:7] == [53, 123, 5353, 53, 123, 5353, 53]
    assert column(rows, IP, "dst")[7:10] == ["203.0.113.135", "203.0.113.128", "203.0.113.129"]
    assert all(bytes(Ether(r.tobytes())[UDP].payload) == b"\x8f" * 31 for r in rows)


def test_ipv4_udp_with_ip_options():
    pkt = ETH / IP(src=SRC, dst=DST, options=b"\x94\x04\x00\x00") / UDP(dport=7) / b"echo"
    rows = build(pkt, 10, {"src": "198.51.100.0/28", "sport": (100, 109)})
    assert Ether(rows[0].tobytes())[IP].ihl == 6
    assert_checksums(rows)


def test_ipv4_icmp():
    pkt = ETH / IP(src=SRC, dst=DST) / ICMP(type=8, id=1, seq=1) / b"ping-payload"
    rows = build(pkt, 20, {"src": "198.51.100.64/26", "ICMP.seq": (1, 20), "ttl": (60, 64)})
    assert_checksums(rows)
    assert column(rows, ICMP, "seq") == list(range(1, 21))
    assert column(rows, IP, "ttl")[:6] == [60, 61, 62, 63, 64, 60]
    assert column(rows, IP, "src")[-1] == "198.51.100.83"


def test_ipv6_tcp():
    pkt = ETH / IPv6(src=SRC6, dst=DST6) / TCP(sport=1, dport=443, flags="SA")
    rows = build(pkt, 64, {"src": "2001:db8:1::/124", "dport": (8000, 8009), "hlim": (1, 3)})
    assert_checksums(rows)
    srcs = [ipaddress.ip_address(s) for s in column(rows, IPv6, "src")]
    base = ipaddress.ip_address("2001:db8:1::")
    assert srcs == [base + i % 16 for i in range(64)]
    assert column(rows, TCP, "dport") == [8000 + i % 10 for i in range(64)]
    assert column(rows, IPv6, "hlim")[:4] == [1, 2, 3, 1]


def test_ipv6_udp():
    pkt = ETH / IPv6(src=SRC6, dst=DST6) / UDP(sport=546, dport=547) / (b"\x01" * 17)
    rows = build(pkt, 30, {"dst": "2001:db8:ff::/120", "sport": (40000, 40014)})
    assert_checksums(rows)
    assert column(rows, IPv6, "dst")[:2] == ["2001:db8:ff::", "2001:db8:ff::1"]
    assert column(rows, UDP, "sport")[14:16] == [40014, 40000]


def test_ipv6_icmpv6_echo():
    pkt = ETH / IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(id=7, seq=1, data=b"abcde")
    rows = build(pkt, 12, {"src": "2001:db8:2::/125", "hlim": (64, 66)})
    assert_checksums(rows)
    assert column(rows, IPv6, "src")[8] == "2001:db8:2::"          # a /125 holds 8 addresses
    assert len({Ether(r.tobytes())[ICMPv6EchoRequest].cksum for r in rows[:8]}) == 8


def test_single_values_and_lists_of_addresses():
    pkt = ETH / IP(src=SRC, dst=DST) / TCP(dport=80)
    rows = build(pkt, 5, {"src": ["198.51.100.1", "203.0.113.1"], "dst": "198.51.100.200", "window": 1})
    assert_checksums(rows)
    assert column(rows, IP, "src") == ["198.51.100.1", "203.0.113.1"] * 2 + ["198.51.100.1"]
    assert set(column(rows, IP, "dst")) == {"198.51.100.200"}
    assert set(column(rows, TCP, "window")) == {1}


@settings(max_examples=50, deadline=None, database=None)
@given(
    v6=st.booleans(),
    udp=st.booleans(),
    lo=st.integers(0, 65535),
    span=st.integers(0, 300),
    count=st.integers(1, 80),
    prefix=st.integers(24, 32),
    payload=st.binary(max_size=45),
)
def test_property_rows_match_scapy(v6, udp, lo, span, count, prefix, payload):
    hi = min(65535, lo + span)
    l4 = UDP(sport=9, dport=9) if udp else TCP(sport=9, dport=9, flags="PA")
    ip = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC, dst=DST)
    net = f"2001:db8:3::/{prefix + 96}" if v6 else f"198.51.100.0/{prefix}"
    rows = build(ETH / ip / l4 / payload, count, {"dport": (lo, hi), "src": net})
    assert rows.shape[0] == count
    assert_checksums(rows)
    layer, n = (IPv6 if v6 else IP), ipaddress.ip_network(net).num_addresses
    first = ipaddress.ip_network(net).network_address
    assert column(rows, type(l4), "dport") == [lo + i % (hi - lo + 1) for i in range(count)]
    assert column(rows, layer, "src") == [str(first + i % n) for i in range(count)]


@pytest.mark.parametrize("pkt, field", [
    (IP(src=SRC, dst=DST) / ICMP(), "dport"),
    (IP(src=SRC, dst=DST) / TCP(), "hlim"),
    (IPv6(src=SRC6, dst=DST6) / UDP(), "ttl"),
    (IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(), "seq"),
    (IP(src=SRC, dst=DST) / UDP(), "TCP.sport"),
])
def test_vary_on_a_missing_field(pkt, field):
    with pytest.raises(InjectError, match=repr(field)):
        build(ETH / pkt, 4, {field: (1, 2)})


def test_empty_tuple_range():
    with pytest.raises(InjectError, match="empty"):
        build(ETH / IP(src=SRC, dst=DST) / TCP(), 4, {"sport": (10, 9)})


@pytest.mark.parametrize("spec", [range(5, 5), []], ids=["range", "list"])
def test_empty_range_object_or_list(spec):
    with pytest.raises(InjectError, match="sport"):
        build(ETH / IP(src=SRC, dst=DST) / TCP(), 4, {"sport": spec})


def test_address_range_as_a_pair():
    rows = build(ETH / IP(src=SRC, dst=DST) / TCP(), 12, {"src": ("198.51.100.250", "198.51.101.3")})
    srcs = [Ether(r.tobytes())[IP].src for r in rows]
    assert srcs[:6] == [f"198.51.100.{n}" for n in range(250, 256)] and srcs[6:10] == [f"198.51.101.{n}" for n in range(4)]
    assert srcs[10] == "198.51.100.250"


@pytest.mark.parametrize("spec, message", [
    ((1, 70000), r"70000 does not fit TCP\.sport, a 16-bit field \(0\.\.65535\)\. Fix: e\.g\. {'sport': \(1, 65535\)}"),
    (["not-a-port"], r"'not-a-port' is not a value for TCP\.sport, a 16-bit field \(0\.\.65535\)"),
])
def test_values_that_do_not_fit_are_refused(spec, message):
    with pytest.raises(InjectError, match=message):
        build(ETH / IP(src=SRC, dst=DST) / TCP(), 4, {"sport": spec})


def test_ipv6_address_for_an_ipv4_field_is_refused():
    with pytest.raises(InjectError, match=r"'2001:db8::5' is an IPv6 address, not a value for IP\.src"):
        build(ETH / IP(src=SRC, dst=DST) / TCP(), 2, {"src": ["2001:db8::5"]})


def test_seeded_values_are_random_in_range_and_reproducible():
    pkt = Ether() / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(dport=80)
    vary = {"src": "198.51.100.0/24", "sport": (1024, 2047)}
    rows = build(pkt, 4000, vary, seed=7)
    sports = rows[:, 34].astype(int) << 8 | rows[:, 35]
    assert sports.min() >= 1024 and sports.max() <= 2047
    assert len(set(sports.tolist())) > 900                      # most of the 1,024 values, drawn at random
    assert sports.tolist()[:5] != list(range(1024, 1029))       # not in turn
    assert (build(pkt, 4000, vary, seed=7) == rows).all()        # the same seed, the same flood
    assert (build(pkt, 1000, vary, start=3000, seed=7) == rows[3000:]).all()   # any part on its own
    assert not (build(pkt, 4000, vary, seed=8) == rows).all()
    assert_checksums(rows[::97])


def test_sizes_vary_with_lengths_and_checksums_right():
    from pktassert.frames.flood import Flood

    for pkt in (ETH / IP(src=SRC, dst=DST) / UDP(dport=53) / b"template payload",
                ETH / IPv6(src=SRC6, dst=DST6) / TCP(dport=80),
                ETH / IP(src=SRC, dst=DST) / ICMP()):
        flood = Flood(pkt, 300, {"size": (100, 1514), "sport" if TCP in pkt or UDP in pkt else "ttl": (1, 200)}, seed=3)
        for i in (0, 1, 150, 299):
            frame = flood.frame(i)
            assert 100 <= len(frame) <= 1514
            parsed = Ether(frame)
            assert frame == rescored(np.frombuffer(frame, np.uint8))   # lengths and checksums as scapy computes them
            if IP in parsed:
                assert parsed[IP].len == len(frame) - 14
            else:
                assert parsed[IPv6].plen == len(frame) - 54
        sizes = {len(flood.frame(i)) for i in range(0, 300, 7)}
        assert len(sizes) > 30                                          # drawn at random over the range
    with pytest.raises(InjectError, match="shorter than the headers"):
        Flood(ETH / IP() / TCP(), 10, {"size": (40, 60)})


# Checksums the template set on purpose stay exactly as given; the others are scapy's.

A, B = "198.51.100.1", "203.0.113.1"
ON_PURPOSE = [
    (ETH / IP(src=SRC, dst=DST, chksum=0x1234) / TCP(dport=80), (IP, 1), 0x1234),
    (ETH / IP(src=SRC, dst=DST) / TCP(dport=80, chksum=0), (TCP, 1), 0),
    (ETH / IP(src=SRC, dst=DST) / UDP(dport=53, chksum=0) / b"no checksum", (UDP, 1), 0),
    (ETH / IPv6(src=SRC6, dst=DST6) / UDP(dport=53, chksum=0xABCD) / b"x", (UDP, 1), 0xABCD),
    (ETH / IP(src=SRC, dst=DST) / ICMP(chksum=0xBEEF) / b"ping", (ICMP, 1), 0xBEEF),
    (ETH / IP(src=SRC, dst=DST) / GRE(chksum_present=1, chksum=0x4242) / IP(src=A, dst=B) / UDP(), (GRE, 1), 0x4242),
    (ETH / IP(src=SRC, dst=DST) / IP(src=A, dst=B, chksum=0x1111) / TCP(), (IP, 2), 0x1111),
    (ETH / IP(src=SRC, dst=DST) / GRE() / IP(src=A, dst=B) / UDP(chksum=0) / b"x", (UDP, 1), 0),
]


def checksum_of(frame: bytes, layer) -> int:
    cls, n = layer
    got = Ether(frame).getlayer(cls, n)
    return got.cksum if hasattr(got, "cksum") else got.chksum


@pytest.mark.parametrize("how", ["build", "flood", "sized", "dissected"])
@pytest.mark.parametrize("pkt, layer, value", ON_PURPOSE, ids=["IP", "TCP=0", "UDP=0", "IPv6-UDP", "ICMP", "GRE",
                                                                 "inner-IP", "GRE-inner-UDP=0"])
def test_checksums_set_on_purpose_are_kept(pkt, layer, value, how):
    vary = {"src": "192.0.2.0/28", "ttl": (1, 9)} if IP in pkt else {"src": "2001:db8:9::/124", "hlim": (1, 9)}
    if how == "build":
        frames = [r.tobytes() for r in build(pkt, 20, vary)]
    else:
        template = Ether(bytes(pkt)) if how == "dissected" else pkt   # inject() hands Flood the frame, dissected
        if how == "sized":
            vary["size"] = (len(pkt), len(pkt) + 40)
        flood = Flood(template, 20, vary, seed=1)
        frames = [flood.frame(i) for i in range(20)]
    assert {checksum_of(f, layer) for f in frames} == {value}
    for i, f in enumerate(frames):
        assert f == rescored(np.frombuffer(f, np.uint8), {layer}), f"packet {i}: a checksum differs from scapy's"


def test_checksum_none_is_left_to_scapy():
    pkt = ETH / IP(src=SRC, dst=DST, chksum=None) / TCP(dport=80, chksum=None)
    assert_checksums(build(pkt, 20, {"src": "198.51.100.0/28", "sport": (1, 20)}))


def test_dissected_template_with_right_checksums_recomputes_them():
    # What inject() passes: the template as frame bytes. Its checksums were scapy's, so every row's are too.
    pkt = ETH / IP(src=SRC, dst=DST) / UDP(dport=53) / b"q"
    flood = Flood(Ether(bytes(pkt)), 30, {"src": "198.51.100.0/24", "sport": (1, 30)})
    assert_checksums(flood.rows(0, 30)[0])


# Tunnels and extension headers: the L4 pseudo-header is the innermost IP header's, with the final
# destination of a routing header; every IPv4 header checksum and a GRE checksum are recomputed.

TUNNELS = {
    "IPIP": (ETH / IP(src=SRC, dst=DST) / IP(src=A, dst=B) / TCP(dport=80),
             {"src": "192.0.2.0/28", "IP#2.src": "198.51.100.0/28", "IP#2.ttl": (1, 9), "sport": (1000, 1020)}),
    "GRE": (ETH / IP(src=SRC, dst=DST) / GRE() / IP(src=A, dst=B) / UDP(dport=53) / b"query",
            {"src": "192.0.2.0/28", "IP#2.dst": "203.0.113.0/29", "sport": (1, 7)}),
    "GRE-checksum": (ETH / IP(src=SRC, dst=DST) / GRE(chksum_present=1) / IP(src=A, dst=B) / UDP(dport=53) / b"q",
                     {"src": "192.0.2.0/28", "IP#2.src": "198.51.100.0/29", "dport": (1, 7)}),
    "6in4": (ETH / IP(src=SRC, dst=DST) / IPv6(src=SRC6, dst=DST6) / TCP(dport=80),
             {"src": "192.0.2.0/28", "IPv6.src": "2001:db8:7::/124", "dport": (1, 30)}),
    "4in6": (ETH / IPv6(src=SRC6, dst=DST6) / IP(src=A, dst=B) / UDP(dport=53) / b"q",
             {"src": "2001:db8:7::/124", "IP.src": "198.51.100.0/28", "IP.id": (1, 99), "sport": (1, 30)}),
    "routing": (ETH / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrRouting(addresses=["2001:db8:a::1", "2001:db8:b::1"])
                / TCP(dport=80), {"src": "2001:db8:7::/124", "dst": "2001:db8:8::/124", "sport": (1, 30)}),
    "segment-routing": (ETH / IPv6(src=SRC6, dst=DST6)
                        / IPv6ExtHdrSegmentRouting(addresses=["2001:db8:a::1", "2001:db8:b::1"]) / UDP(dport=53) / b"q",
                        {"src": "2001:db8:7::/124", "dst": "2001:db8:8::/124", "sport": (1, 30)}),
    "hop-by-hop-icmpv6": (ETH / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                          / ICMPv6EchoRequest(data=b"ping"), {"src": "2001:db8:7::/124", "hlim": (1, 5)}),
    "ipv4-source-route": (ETH / IP(src=SRC, dst=DST, options=[IPOption_LSRR(routers=[A, B])]) / TCP(dport=80),
                          {"src": "192.0.2.0/28", "dst": "198.51.100.0/28", "sport": (1, 30)}),
    "vxlan": (ETH / IP(src=SRC, dst=DST) / UDP(sport=4789, dport=4789) / VXLAN(vni=7) / ETH / IP(src=A, dst=B)
              / TCP(dport=80), {"src": "192.0.2.0/28", "IP#2.src": "198.51.100.0/28", "TCP.sport": (1, 30)}),
}


@pytest.mark.parametrize("name", TUNNELS)
def test_tunnel_checksums_match_scapy(name):
    pkt, vary = TUNNELS[name]
    assert_checksums(build(pkt, 40, vary))
    assert_checksums(build(pkt, 40, vary, seed=5))


@pytest.mark.parametrize("name", TUNNELS)
def test_tunnel_lengths_and_checksums_follow_sizes(name):
    pkt, vary = TUNNELS[name]
    flood = Flood(pkt, 40, {**vary, "size": (len(pkt), len(pkt) + 300)}, seed=2)
    for i in range(40):
        frame = flood.frame(i)
        assert frame == rescored(np.frombuffer(frame, np.uint8)), f"packet {i}: a length or checksum differs"


def test_tunnel_fields_are_chosen_by_position():
    ipip = ETH / IP(src=SRC, dst=DST) / IP(src=A, dst=B) / TCP(dport=80)
    for vary, outer, inner in (({"src": "198.51.100.77"}, "198.51.100.77", A),
                               ({"IP.src": "198.51.100.77"}, "198.51.100.77", A),
                               ({"IP#1.src": "198.51.100.77"}, "198.51.100.77", A),
                               ({"IP#2.src": "198.51.100.77"}, SRC, "198.51.100.77")):
        got = Ether(build(ipip, 1, vary)[0].tobytes())
        assert (got[IP].src, got.getlayer(IP, 2).src) == (outer, inner), vary
    with pytest.raises(InjectError, match=r"'IP#3\.src'.*IP#2\.src.*LAYER#n\.field"):
        build(ipip, 1, {"IP#3.src": A})
    # A bare name is the outermost layer's: in 4in6, the IPv6 header's source.
    four_in_six = ETH / IPv6(src=SRC6, dst=DST6) / IP(src=A, dst=B) / TCP()
    got = Ether(build(four_in_six, 1, {"src": "2001:db8::77"})[0].tobytes())
    assert (got[IPv6].src, got[IP].src) == ("2001:db8::77", A)


def test_ipv6_address_range_as_a_pair():
    rows = build(ETH / IPv6(src=SRC6, dst=DST6) / TCP(), 6, {"src": ("2001:db8::fffe", "2001:db8::1:2")})
    assert column(rows, IPv6, "src") == ["2001:db8::fffe", "2001:db8::ffff", "2001:db8::1:0", "2001:db8::1:1",
                                         "2001:db8::1:2", "2001:db8::fffe"]
    assert_checksums(rows)


@given(st.integers(1, 3_000_000), st.sampled_from([16384, 65536, 262144]))
def test_chunks_cover_every_frame_once_and_grow_to_the_most(n, most):
    """The engine's chunks: contiguous, each at most ``most``, a flood larger than one chunk starting small
    (the kernel starts while the next is built) and growing by at most 3x (each build done in time)."""
    from pktassert.device.inject import _chunks

    bounds = _chunks(n, most)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == n and (sizes > 0).all() and (sizes <= most).all()
    if n > most:
        assert sizes[0] == 4096
        assert (sizes[1:-1] <= 3 * sizes[:-2]).all()
    else:
        assert list(sizes) == [n]
