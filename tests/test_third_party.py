"""Real libbpf-style XDP programs that no one here wrote, vendored in tests/third_party/ (its README.md
names each file's repository, path and commit), tested against their documented behaviour.

Every program is tested in two forms: from its C source (pktassert compiles it with clang) and from
the object clang builds of it with the flags of its own project's Makefile (built once per session,
below); the cilium/ebpf program also from the object its repository ships. Each test runs in the
tiers where what it asserts is observable.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import struct
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from vendored_build import build_all, needs_clang

from pktassert import LibbpfSource, ObjectFile, Verdict

THIRD_PARTY = Path(__file__).resolve().parent / "third_party"
# Stands in for glibc's <gnu/stubs-32.h> (Debian's libc6-dev-i386) when that package is missing: see the file.
SHIM = THIRD_PARTY / "include-shim"
MULTIARCH = "/usr/include/x86_64-linux-gnu"
XDP_PASS_KEY, XDP_DROP_KEY = 2, 1

XDP_TUTORIAL = "xdp-project/xdp-tutorial@cc5e32b0e285c3d17203e879f56981b574e85f53"
CILIUM_EBPF = "cilium/ebpf@5ba0b3b27a92c7b0402419f61240416c9b3c7c42"

BOTH_TIERS = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
LIVE = pytest.mark.parametrize("tier", ["live"], indirect=True)
FORMS = pytest.mark.parametrize("form", ["source", "object"])


@dataclasses.dataclass(frozen=True)
class Vendored:
    """A vendored program: its source, entry function, the include folders its project's build
    passes, and the other flags of that build."""

    source: Path
    func: str
    includes: tuple[Path, ...] = ()
    flags: tuple[str, ...] = ()


# xdp-tutorial: lib/defines.mk (BPF_CFLAGS) and common/common.mk (`$(CLANG) -target bpf $(BPF_CFLAGS) -O2 -c -g`).
TUTORIAL_FLAGS = ("-Wall", "-Wno-unused-value", "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types",
                  "-Wno-visibility", "-Werror", "-fno-stack-protector")
# cilium/ebpf: examples/xdp/main.go (`bpf2go ... xdp.c -- -I../headers`), cmd/bpf2go (-O2 -mcpu=v1 -g) and
# the repository's Makefile (BPF2GO_CFLAGS="-O2 -g -Wall -Werror").
BPF2GO_FLAGS = ("-mcpu=v1", "-Wall", "-Werror")

CILIUM_XDP = Vendored(THIRD_PARTY / "cilium-ebpf/examples/xdp/xdp.c", "xdp_prog_func",
                      (THIRD_PARTY / "cilium-ebpf/examples/headers",), BPF2GO_FLAGS)
CILIUM_PREBUILT = THIRD_PARTY / "cilium-ebpf/examples/xdp/bpf_bpfel.o"
MAP_COUNTER = Vendored(THIRD_PARTY / "xdp-tutorial/basic03-map-counter/xdp_prog_kern.c", "xdp_stats1_func",
                       (), TUTORIAL_FLAGS)
TCPDUMP = Vendored(THIRD_PARTY / "xdp-tutorial/tracing04-xdp-tcpdump/xdp_sample_pkts_kern.c", "xdp_sample_prog",
                   (), TUTORIAL_FLAGS)
PARSER = Vendored(THIRD_PARTY / "xdp-tutorial/packet02-rewriting/xdp_prog_kern.c", "xdp_parser_func",
                  (SHIM,), TUTORIAL_FLAGS)
PROGRAMS = {"cilium_xdp": CILIUM_XDP, "map_counter": MAP_COUNTER, "tcpdump": TCPDUMP, "parser": PARSER}


@pytest.fixture(scope="session")
def third_party_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each vendored program built as its project's Makefile builds it, into a session folder."""
    def command(clang: str, prog: Vendored, obj: Path) -> list[str]:
        return [clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{prog.source.parent}",
                f"-I{MULTIARCH}", *(f"-I{d}" for d in prog.includes), *prog.flags, "-c", str(prog.source),
                "-o", str(obj)]

    return build_all(PROGRAMS, tmp_path_factory.mktemp("third_party_objects"), command)


def subject(name: str, form: str, objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
    prog = PROGRAMS[name]
    needs_clang()
    if form == "source":
        return LibbpfSource(prog.source, prog.func, tuple(f"-I{d}" for d in prog.includes))
    if form == "object":
        return ObjectFile(objects[name], prog.func)
    raise AssertionError(form)


def by_source(stats) -> dict[str, int]:
    """cilium's map, keyed by source address: its __u32 key holds the address in network byte order."""
    return {".".join(map(str, int(k).to_bytes(4, sys.byteorder))): int(v) for k, v in stats.items()}


# --- cilium/ebpf examples/xdp: packets per source IPv4 address ------------------------------------------------

@pytest.mark.parametrize("form", ["source", "object", "prebuilt"])
class TestCiliumXdpCounter:
    """cilium/ebpf examples/xdp/xdp.c: `xdp_prog_func` counts packets per IPv4 source address in the LRU
    hash `xdp_stats_map` (first packet 1, then an atomic increment), skips frames that are not IPv4,
    and passes everything (XDP_PASS). Its examples/README.md: "Print packet counts by IPv4 source address"."""

    @pytest.fixture
    def xdp_program(self, form: str, third_party_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        if form == "prebuilt":  # the object the repository ships (bpf2go: clang -O2 -mcpu=v1 -g, DWARF stripped)
            needs_clang()
            return ObjectFile(CILIUM_PREBUILT, CILIUM_XDP.func)
        return subject("cilium_xdp", form, third_party_objects)

    @BOTH_TIERS
    def test_counts_packets_per_source_address(self, xdp, inject):
        """Origin: cilium/ebpf, examples/xdp/xdp.c (+ examples/headers), commit 5ba0b3b27a92c7b0402419f61240416c9b3c7c42."""
        r = inject([IP(src="198.51.100.7", dst=xdp.ip) / ICMP(seq=1),
                    IP(src="203.0.113.9", dst=xdp.ip) / UDP(sport=4000, dport=9),
                    IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S"),
                    IP(src="198.51.100.7", dst=xdp.ip) / UDP(dport=53),
                    IP(src="203.0.113.9", dst=xdp.ip) / ICMP(seq=2)])
        assert r.verdicts == [Verdict.PASS] * 5
        stats = xdp.map("xdp_stats_map")
        assert stats["198.51.100.7"] == 3 and stats["203.0.113.9"] == 2   # keys as address strings
        assert by_source(stats) == {"198.51.100.7": 3, "203.0.113.9": 2}

    @BOTH_TIERS
    def test_frames_that_are_not_ipv4_are_passed_uncounted(self, xdp, inject):
        """Origin: cilium/ebpf, examples/xdp/xdp.c, commit 5ba0b3b27a92c7b0402419f61240416c9b3c7c42."""
        truncated = bytes(Ether(src=xdp.peer.mac, dst=xdp.mac, type=0x0800)) + bytes(IP(src="198.51.100.7"))[:12]
        r = inject([IPv6(src="2001:db8::7", dst=xdp.ip6) / ICMPv6EchoRequest(seq=1),
                    Ether(src=xdp.peer.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="198.51.100.7", pdst=xdp.ip),
                    truncated,                                  # EtherType IPv4, but no whole IPv4 header
                    IP(src="203.0.113.5", dst=xdp.ip) / UDP(dport=9)])
        assert r.verdicts == [Verdict.PASS] * 4
        assert by_source(xdp.map("xdp_stats_map")) == {"203.0.113.5": 1}

    @BOTH_TIERS
    def test_a_flood_is_counted_exactly_per_source(self, xdp, inject):
        """Origin: cilium/ebpf, examples/xdp/xdp.c, commit 5ba0b3b27a92c7b0402419f61240416c9b3c7c42."""
        r = inject(IP(dst=xdp.ip) / UDP(dport=9), count=2000,
                   vary={"src": ["198.51.100.1", "198.51.100.2", "203.0.113.3", "203.0.113.4"], "sport": (1024, 3023)})
        assert r.count(Verdict.PASS) == 2000
        assert by_source(xdp.map("xdp_stats_map")) == {"198.51.100.1": 500, "198.51.100.2": 500,
                                                       "203.0.113.3": 500, "203.0.113.4": 500}

    @LIVE
    def test_passed_echo_requests_reach_the_dut_stack(self, xdp, inject):
        """Origin: cilium/ebpf, examples/xdp/xdp.c, commit 5ba0b3b27a92c7b0402419f61240416c9b3c7c42."""
        r = inject([IP(dst=xdp.ip) / ICMP(id=7, seq=s) / b"ping" for s in (1, 2, 3)])
        assert r.verdicts == [Verdict.PASS] * 3
        replies = [p for p in xdp.received_by_peer() if ICMP in p and p[ICMP].type == 0]
        assert sorted(p[ICMP].seq for p in replies) == [1, 2, 3]   # the DUT's stack answered each one
        assert by_source(xdp.map("xdp_stats_map")) == {xdp.peer.ip: 3}


# --- xdp-tutorial basic03-map-counter: XDP_PASS counter ------------------------------------------------------

@FORMS
class TestTutorialMapCounter:
    """xdp-tutorial basic03-map-counter/xdp_prog_kern.c: `xdp_stats1_func` adds 1 to `rx_packets` of
    `xdp_stats_map[XDP_PASS]` (an array of struct datarec, atomically) and returns XDP_PASS for every frame."""

    @pytest.fixture
    def xdp_program(self, form: str, third_party_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("map_counter", form, third_party_objects)

    @BOTH_TIERS
    def test_every_frame_passes_and_is_counted_under_xdp_pass(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, basic03-map-counter/xdp_prog_kern.c (+ common_kern_user.h),
        commit cc5e32b0e285c3d17203e879f56981b574e85f53."""
        r = inject([IP(src="198.51.100.7", dst=xdp.ip) / UDP(dport=9),
                    IPv6(src="2001:db8::7", dst=xdp.ip6) / TCP(dport=22, flags="S"),
                    Ether(src=xdp.peer.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="203.0.113.1", pdst=xdp.ip),
                    Ether(src=xdp.peer.mac, dst=xdp.mac) / Dot1Q(vlan=5) / IP(src="203.0.113.2", dst=xdp.ip) / ICMP()])
        assert r.verdicts == [Verdict.PASS] * 4
        stats = xdp.map("xdp_stats_map")
        assert stats[XDP_PASS_KEY].rx_packets == 4
        assert {k: v.rx_packets for k, v in stats.items()} == {0: 0, 1: 0, 2: 4, 3: 0, 4: 0}

    @BOTH_TIERS
    def test_a_flood_is_counted_exactly(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, basic03-map-counter/xdp_prog_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53."""
        r = inject(IP(dst=xdp.ip) / UDP(dport=9), count=5000, vary={"src": "198.51.100.0/24", "sport": (1, 5000)})
        assert r.count(Verdict.PASS) == 5000
        assert xdp.map("xdp_stats_map")[XDP_PASS_KEY].rx_packets == 5000

    @LIVE
    def test_passed_echo_requests_reach_the_dut_stack(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, basic03-map-counter/xdp_prog_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53."""
        r = inject([IP(dst=xdp.ip) / ICMP(id=9, seq=s) for s in (4, 5)])
        assert r.verdicts == [Verdict.PASS, Verdict.PASS]
        assert sorted(p[ICMP].seq for p in xdp.received_by_peer() if ICMP in p and p[ICMP].type == 0) == [4, 5]
        assert xdp.map("xdp_stats_map")[XDP_PASS_KEY].rx_packets == 2


# --- xdp-tutorial tracing04-xdp-tcpdump: every frame sampled to a perf event array ---------------------------

@FORMS
class TestTutorialXdpTcpdump:
    """xdp-tutorial tracing04-xdp-tcpdump/xdp_sample_pkts_kern.c: `xdp_sample_prog` writes to the perf
    event array `my_map`, for every frame, struct S {__u16 cookie = 0xdead; __u16 pkt_len = min(len,
    SAMPLE_SIZE=1024)} (packed) followed by the frame's bytes (its whole length is asked for), and returns
    XDP_PASS. Its user side (xdp_sample_pkts_user.c) writes those bytes to a pcap."""

    @pytest.fixture
    def xdp_program(self, form: str, third_party_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("tcpdump", form, third_party_objects)

    @staticmethod
    def samples(events) -> list[tuple[int, int, bytes]]:
        return [(*struct.unpack_from("<HH", e), e[4:]) for e in events.read()]

    @BOTH_TIERS
    def test_every_frame_is_sampled_with_its_bytes(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, tracing04-xdp-tcpdump/xdp_sample_pkts_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53."""
        events = xdp.events("my_map")          # the reader is there before the first frame
        r = inject([IP(src="198.51.100.7", dst=xdp.ip) / UDP(sport=1111, dport=9) / b"hello",
                    IPv6(src="2001:db8::7", dst=xdp.ip6) / ICMPv6EchoRequest(seq=3) / (b"x" * 100),
                    IP(src="203.0.113.9", dst=xdp.ip) / TCP(dport=443, flags="S")])
        assert r.verdicts == [Verdict.PASS] * 3
        got = self.samples(events)
        assert len(got) == 3 and events.lost == 0
        assert {cookie for cookie, _, _ in got} == {0xdead}
        frames = [r.frame(i) for i in range(3)]
        # Each sample: its length, then the frame as the filter saw it (perf pads the record to 8 bytes).
        seen = collections.Counter(data[:length] for _, length, data in got)
        assert seen == collections.Counter(frames)
        assert sorted(length for _, length, _ in got) == sorted(len(f) for f in frames)

    @BOTH_TIERS
    def test_pkt_len_is_capped_at_sample_size_but_the_whole_frame_is_sent(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, tracing04-xdp-tcpdump/xdp_sample_pkts_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53 (`metadata.pkt_len = min(sample_size, SAMPLE_SIZE)`,
        `flags |= (__u64)sample_size << 32`)."""
        events = xdp.events("my_map")
        r = inject(IP(src="198.51.100.7", dst=xdp.ip) / UDP(dport=9) / (bytes(range(256)) * 5))
        frame = r.frame(0)
        assert r.verdict == Verdict.PASS and len(frame) > 1024
        ((cookie, length, data),) = self.samples(events)
        assert (cookie, length) == (0xdead, 1024)
        assert data[:len(frame)] == frame

    @LIVE
    def test_sampled_frames_still_reach_the_dut_stack(self, xdp, inject):
        """Origin: xdp-project/xdp-tutorial, tracing04-xdp-tcpdump/xdp_sample_pkts_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53."""
        events = xdp.events("my_map")
        r = inject(IPv6(dst=xdp.ip6) / ICMPv6EchoRequest(id=3, seq=8))
        assert r.verdict == Verdict.PASS
        assert [p[ICMPv6EchoReply].seq for p in xdp.received_by_peer() if ICMPv6EchoReply in p] == [8]
        assert len(self.samples(events)) == 1


# --- xdp-tutorial packet02-rewriting: the packet01 parsing solution ------------------------------------------

PIN = Path("/sys/fs/bpf/xdp_stats_map")   # where libbpf pins LIBBPF_PIN_BY_NAME maps by default


class PinnedOnHost(Exception):
    """The filter's map was pinned in the host's bpffs by loading it for a test (pktassert never pins:
    a pin would outlive the test and be shared with the host)."""


@pytest.fixture(scope="module")
def host_pin_watch():
    """Whether a pin at PIN was there before this module's tests loaded anything; a pin our loads made
    is removed afterwards (one that was there before belongs to someone else and stays)."""
    before = PIN.exists()
    yield before
    if not before and PIN.exists():
        os.unlink(PIN)


@FORMS
class TestTutorialPacketParser:
    """xdp-tutorial packet02-rewriting/xdp_prog_kern.c, `xdp_parser_func` ("Solution to the parsing
    exercise in lesson packet01. Handles VLANs and legacy IP"): ICMP and ICMPv6 echo requests with an
    even sequence number are dropped, everything else passes; each verdict is counted with its bytes in
    the per-CPU array `xdp_stats_map` (common/xdp_stats_kern.h)."""

    @pytest.fixture
    def xdp_program(self, form: str, third_party_objects: dict[str, Path], host_pin_watch: bool
                    ) -> LibbpfSource | ObjectFile:
        return subject("parser", form, third_party_objects)

    @staticmethod
    def no_host_pin(pinned_before: bool) -> None:
        if PIN.exists() and not pinned_before:
            raise PinnedOnHost(f"loading the filter for a test pinned its map at {PIN} on the host")

    @BOTH_TIERS
    def test_even_echo_requests_are_dropped(self, xdp, inject, host_pin_watch):
        """Origin: xdp-project/xdp-tutorial, packet02-rewriting/xdp_prog_kern.c (+ common/parsing_helpers.h,
        common/xdp_stats_kern.h, common/xdp_stats_kern_user.h), commit cc5e32b0e285c3d17203e879f56981b574e85f53."""
        self.no_host_pin(host_pin_watch)
        packets = [IP(src="198.51.100.7", dst=xdp.ip) / ICMP(type=8, seq=s) for s in (1, 2, 3, 4)]
        packets += [IPv6(src="2001:db8::7", dst=xdp.ip6) / ICMPv6EchoRequest(seq=s) for s in (1, 2, 3, 4)]
        packets += [Ether(src=xdp.peer.mac, dst=xdp.mac) / Dot1Q(vlan=10) / IP(dst=xdp.ip) / ICMP(type=8, seq=6),
                    IP(dst=xdp.ip) / ICMP(type=0, seq=2),      # an even echo reply: not a request
                    IP(dst=xdp.ip) / UDP(dport=2)]
        r = inject(packets)
        D, P = Verdict.DROP, Verdict.PASS
        assert r.verdicts == [P, D, P, D, P, D, P, D, D, P, P]
        stats = xdp.map("xdp_stats_map")
        dropped = [i for i, v in enumerate(r.verdicts) if v == D]
        assert sum(c.rx_packets for c in stats[XDP_DROP_KEY]) == len(dropped)
        assert sum(c.rx_bytes for c in stats[XDP_DROP_KEY]) == sum(len(r.frame(i)) for i in dropped)
        assert sum(c.rx_packets for c in stats[XDP_PASS_KEY]) == len(r) - len(dropped)

    @LIVE
    def test_only_odd_echo_requests_are_answered(self, xdp, inject, host_pin_watch):
        """Origin: xdp-project/xdp-tutorial, packet02-rewriting/xdp_prog_kern.c, commit
        cc5e32b0e285c3d17203e879f56981b574e85f53."""
        self.no_host_pin(host_pin_watch)
        r = inject([IP(dst=xdp.ip) / ICMP(id=5, seq=s) for s in range(1, 7)])
        assert r.count(Verdict.DROP) == 3
        answered = sorted(p[ICMP].seq for p in xdp.received_by_peer() if ICMP in p and p[ICMP].type == 0)
        assert answered == [1, 3, 5]
