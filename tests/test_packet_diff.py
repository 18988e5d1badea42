"""Expected packets and the field diff (pure logic: no root needed)."""

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pktassert import Mask, expect
from pktassert.results.assertion import explain
from pktassert.results.packet_diff import diff

ETH = Ether(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01")


def test_the_diff_names_exactly_the_fields_that_differ():
    got = ETH / IP(src="192.0.2.2", dst="192.0.2.1", ttl=63) / TCP(sport=1000, dport=80, flags="S")
    want = ETH / IP(src="192.0.2.2", dst="192.0.2.1", ttl=64) / TCP(sport=1000, dport=80, flags="SA")
    assert [line.split(":")[0] for line in diff(got, want)] == ["IP.ttl", "IP.chksum", "TCP.flags", "TCP.chksum"]
    assert diff(got, want)[0] == "IP.ttl: got 63, expected 64"
    assert diff(got, want, Mask("ttl", "chksum")) == ["TCP.flags: got S, expected SA"]
    assert diff(got, got) == []


def test_ipv6_and_payload():
    got = ETH / IPv6(dst="2001:db8::1") / UDP(dport=53) / b"hello"
    want = ETH / IPv6(dst="2001:db8::2") / UDP(dport=53) / b"hellp"
    assert diff(got, want, Mask("UDP.chksum")) == [
        "IPv6.dst: got 2001:db8::1, expected 2001:db8::2",
        "Raw: 5 bytes, expected 5; first difference at byte 4: got 6f, expected 70"]
    assert diff(got, want, Mask("IPv6.dst", "UDP.chksum", "Raw")) == []


def test_layers_that_differ():
    got = ETH / IP(dst="192.0.2.1") / UDP()
    assert diff(got, ETH / IP(dst="192.0.2.1") / TCP()) == [
        "IP.len: got 28, expected 40", "IP.proto: got udp, expected tcp", "IP.chksum: got 0xf6cc, expected 0xf6cb",
        "TCP: got a UDP layer where TCP was expected"]
    assert diff(ETH / IP(dst="192.0.2.1"), ETH / IP(dst="192.0.2.1") / UDP())[-1] == \
        "got fewer layers than expected: missing UDP"


def test_tunnels_by_position():
    inner = IP(src="198.51.100.1", dst="198.51.100.2", ttl=9)
    got = ETH / IP(dst="192.0.2.1", proto=4) / inner
    want = ETH / IP(dst="192.0.2.1", proto=4) / IP(src="198.51.100.1", dst="198.51.100.2", ttl=8)
    assert [line.split(":")[0] for line in diff(got, want)] == ["IP#2.ttl", "IP#2.chksum"]
    assert diff(got, want, Mask("IP#2.ttl", "IP#2.chksum")) == []


def test_expect_compares_equal_either_way_and_explains_a_failure():
    out = ETH / IP(dst="192.0.2.1", ttl=63) / UDP(dport=53)
    exp = expect(ETH / IP(dst="192.0.2.1", ttl=64) / UDP(dport=53), ignore=["IP.ttl", "IP.chksum"])
    assert out == exp and exp == out
    strict = expect(ETH / IP(dst="192.0.2.1", ttl=64) / UDP(dport=53), ignore=Mask("IP.chksum"))
    assert out != strict
    assert explain("==", out, strict) == ["the packets differ in 1 field (ignoring IP.chksum):",
                                          "IP.ttl: got 63, expected 64"]


def test_plain_scapy_packets_get_the_diff_too():
    a, b = ETH / IP(dst="192.0.2.1", tos=1), ETH / IP(dst="192.0.2.1", tos=2)
    lines = explain("==", a, b)
    assert lines is not None and lines[1] == "IP.tos: got 0x1, expected 0x2"  # as scapy shows the field


@pytest.mark.parametrize("spec", [["ttl"], Mask("ttl")])
def test_ignore_as_names_or_mask(spec):
    assert expect(ETH / IP(ttl=1), ignore=[*spec.fields, "chksum"] if isinstance(spec, Mask) else [*spec, "chksum"]) \
        == ETH / IP(ttl=2)


TOS = """int set_tos(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    ip->tos = 0x10;  /* checksum left stale on purpose */
    return XDP_TX;
}"""


@pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)
@pytest.mark.xdp(TOS, func="set_tos")
def test_what_the_filter_sent_compared_with_an_expected_packet(xdp, inject, tier):
    sent = IP(dst=xdp.ip) / UDP(dport=53) / b"q"
    r = inject(sent, count=3)
    out = r[0].output
    head = Ether(src=out.src, dst=out.dst)
    exact = expect(head / IP(src=out[IP].src, dst=xdp.ip, tos=0x10) / UDP(sport=53, dport=53) / b"q",
                   ignore=["IP.chksum"])
    assert out == exact
    assert all(o == exact for o in r.outputs)
    wrong = expect(head / IP(src=out[IP].src, dst=xdp.ip, tos=0x08) / UDP(sport=53, dport=53) / b"q",
                   ignore=["IP.chksum"])
    assert explain("==", out, wrong) == ["the packets differ in 1 field (ignoring IP.chksum):",
                                         "IP.tos: got 0x10, expected 0x8"]
    assert diff(out, exact.copy())[0].startswith("IP.chksum: got ")  # stale on purpose: the filter left it
