"""Keyword block (keyword_block.bpf.c): packets whose payload carries a banned keyword are dropped,
whatever else they carry; payloads varied per packet, matched with where(payload=...)."""

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import Verdict

pytestmark = pytest.mark.xdp("keyword_block.bpf.c", func="keyword_block")

REQUESTS = [b"GET /etc/passwd HTTP/1.1\r\n", b"GET /index.html HTTP/1.1\r\n",
            b"POST /upload?f=/etc/passwd HTTP/1.1\r\n", b"GET /etc/hosts HTTP/1.1\r\n"]


def test_requests_for_the_password_file_dropped(xdp, inject):
    r = inject(IP(dst=xdp.ip) / TCP(dport=80, flags="PA"), count=400, vary={"payload": REQUESTS, "sport": (1024, 65535)})
    banned = r.where(payload=b"/etc/passwd")
    assert len(banned) == 200 and banned.count(Verdict.DROP) == 200
    assert r.where(lambda p: b"passwd" not in bytes(p[TCP].payload)).count(Verdict.PASS) == 200


def test_keyword_past_the_scanned_bytes_passes(xdp, inject):
    late = b"X" * 64 + b"/etc/passwd"  # the filter scans the first 64 bytes of payload
    assert inject(IP(dst=xdp.ip) / UDP(dport=69) / late).verdict == Verdict.PASS


def test_a_million_signature_variants(xdp, inject):
    # "RRQ /etc/passwd": byte 4 of the payload (the '/') swept over the printable characters; only
    # '/' itself spells the keyword.
    r = inject(IP(dst=xdp.ip) / UDP(dport=69) / b"RRQ /etc/passwd\x00octet\x00", count=1_000_000,
               vary={"payload[4]": (0x20, 0x7E)})
    spelled = len(range(ord("/") - 0x20, 1_000_000, 0x7E - 0x20 + 1))
    assert r.accounted == 1_000_000 and r.count(Verdict.DROP) == spelled
    assert r.where(payload=b"/etc/passwd").count(Verdict.DROP) == spelled
