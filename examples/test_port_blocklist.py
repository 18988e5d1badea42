"""The port blocklist: TCP and UDP to blocked destination ports are dropped, over IPv4 and IPv6.

Every test runs on the three forms of the same filter: the bcc source (port_blocklist.c), the
libbpf source (port_blocklist.bpf.c, compiled by pktassert with clang) and the object the
Makefile builds from it (build/port_blocklist.bpf.o: `make -C examples`)."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from pktassert import BccSource, LibbpfSource, ObjectFile, Verdict

HERE = Path(__file__).parent
FORMS = {"bcc": lambda: BccSource(HERE / "port_blocklist.c", "port_blocklist"),
         "libbpf": lambda: LibbpfSource(HERE / "port_blocklist.bpf.c", "port_blocklist"),
         "object": lambda: ObjectFile(HERE / "build" / "port_blocklist.bpf.o", "port_blocklist")}


@pytest.fixture(params=list(FORMS))
def xdp_program(request):
    """The filter under test, in each of its forms (this overrides pktassert's fixture)."""
    return FORMS[request.param]()

BLOCKED_BY_DEFAULT = {23, 135, 445, 3389}


def test_blocked_ports_dropped_others_pass(xdp, inject):
    ports = [22, 23, 80, 135, 443, 445, 3389, 8080]
    result = inject([IP(dst=xdp.ip) / TCP(dport=p, flags="S") for p in ports])
    assert result.verdicts == [Verdict.DROP if p in BLOCKED_BY_DEFAULT else Verdict.PASS for p in ports]


def test_port_scan_hits_only_blocked_ports(xdp, inject):
    scan = inject(IP(dst=xdp.ip) / TCP(flags="S"), count=1024, vary={"dport": (1, 1024)})
    assert len(scan) == 1024
    # Packet i went to port i + 1; 3389 is beyond the scanned range.
    assert [i + 1 for i, v in enumerate(scan.verdicts) if v == Verdict.DROP] == [23, 135, 445]
    assert scan.where(TCP, dport=23).verdict == Verdict.DROP
    assert scan.where(TCP, dport=BLOCKED_BY_DEFAULT).count(Verdict.DROP) == 3
    assert xdp.counts()[Verdict.PASS] == 1021


def test_port_blocked_at_run_time(xdp, inject):
    probe = [IP(dst=xdp.ip) / TCP(dport=8080, flags="S"), IP(dst=xdp.ip) / UDP(dport=8080),
             IP(dst=xdp.ip) / TCP(dport=8081, flags="S")]
    assert inject(probe).verdicts == [Verdict.PASS] * 3
    xdp.map("blocked_ports")[8080] = 1     # seed the filter's own map by name
    assert inject(probe).verdicts == [Verdict.DROP, Verdict.DROP, Verdict.PASS]


def test_ipv6_telnet_dropped(xdp, inject):
    result = inject([IPv6(dst=xdp.ip6) / TCP(dport=23, flags="S"), IPv6(dst=xdp.ip6) / TCP(dport=22, flags="S")])
    assert result.where(IPv6, dport=23).verdict == Verdict.DROP
    assert result.where(IPv6, dport=22).verdict == Verdict.PASS


def test_udp_smb_dropped(xdp, inject):
    result = inject([IP(dst=xdp.ip) / UDP(dport=445), IP(dst=xdp.ip) / UDP(dport=53),
                     IPv6(dst=xdp.ip6) / UDP(dport=445)])
    assert result.verdicts == [Verdict.DROP, Verdict.PASS, Verdict.DROP]


def test_full_port_scan_from_sixteen_sources(xdp, inject):
    # Every TCP port from 16 scanners: 1,048,560 SYNs; only the blocked ports are dropped.
    # Both fields step with every packet; 16 and 65,535 share no factor, so each (source, port) pair comes once.
    scan = inject(IP(dst=xdp.ip) / TCP(flags="S"), count=16 * 65535,
                  vary={"dport": (1, 65535), "src": "203.0.113.0/28"}, keep=2_000_000)  # every record, for where()
    assert scan.sent == scan.accounted == 16 * 65535
    assert scan.count(Verdict.DROP) == 16 * len(BLOCKED_BY_DEFAULT)
    assert scan.where(TCP, dport=BLOCKED_BY_DEFAULT).count(Verdict.DROP) == 16 * 4
    assert len(set(zip(scan.records["src"][:, 3].tolist(), scan.records["dport"].tolist()))) == 16 * 65535


def test_replay_of_a_port_scan_capture(xdp, inject):
    # captures/portscan.pcap (made by captures/make_portscan.py): a SYN scan of ports 1-1024 with web and DNS traffic.
    replay = inject.pcap(Path(__file__).parent / "captures" / "portscan.pcap", speed="max")
    scan = replay.where(TCP, flags="S", src="203.0.113.66")
    assert replay.sent == replay.accounted == 1056 and scan.count() == 1024
    assert scan.where(dport=BLOCKED_BY_DEFAULT).count(Verdict.DROP) == 3   # 23, 135, 445 (3389 is above 1024)
    assert replay.count(Verdict.DROP) == 3                                 # and nothing else

