"""flood.build: rows varied in numpy must be the frames scapy would have built, checksums included."""

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from pktassert import InjectError
from pktassert.flood import build

ETH = Ether(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01")
SRC, DST = "192.0.2.2", "192.0.2.1"
SRC6, DST6 = "2001:db8::2", "2001:db8::1"


def rescored(row: np.ndarray) -> bytes:
    """The row as scapy builds it when every checksum field is left for scapy to compute."""
    pkt = Ether(row.tobytes())
    layer = pkt
    while layer:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                delattr(layer, name)
        layer = layer.payload
    return bytes(pkt)


def assert_checksums(rows: np.ndarray) -> None:
    for i, row in enumerate(rows):
        assert row.tobytes() == rescored(row), f"row {i}: a checksum differs from scapy's"


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
    ((1, 70000), "70000 does not fit the 16-bit field"),
    (["not-a-port"], "'not-a-port' is not a value for this field"),
])
def test_values_that_do_not_fit_are_refused(spec, message):
    with pytest.raises(InjectError, match=message):
        build(ETH / IP(src=SRC, dst=DST) / TCP(), 4, {"sport": spec})


def test_ipv6_address_for_an_ipv4_field_is_refused():
    with pytest.raises(InjectError, match="IPv6 address for a 4-byte field"):
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
    from pktassert.flood import Flood

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
