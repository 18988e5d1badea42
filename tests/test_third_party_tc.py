"""Real tc-BPF classifiers that no one here wrote, vendored in tests/third_party/bpf-examples/ (its
README.md names each file's repository, path and commit), tested against their documented behaviour.

Both come from xdp-project/bpf-examples:

- pkt-loop-filter: ``filter_ingress_pkt`` drops frames whose source MAC+VLAN was recently seen leaving
  (a switch looped them back), keeps multicast to the bond's active interface, and lets gratuitous ARP
  release a MAC; ``record_egress_pkt`` records every source MAC+VLAN that leaves, and sends IGMP and MLD
  reports out of the active interface only.
- preserve-dscp: ``read_dscp`` remembers each flow's DSCP (keyed by the skb hash), ``write_dscp``
  writes it back into the IPv4/IPv6 header of packets whose ``skb->hash`` is in the map.

Every program is tested in two forms: from its C source (pktassert compiles it with clang) and from
the object clang builds of it with the flags of bpf-examples' own Makefiles (built once per session,
below). Each test runs in the tiers where what it asserts is observable.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from scapy.layers.igmp import IGMP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from vendored_build import build_all, needs_clang

from pktassert import LibbpfSource, ObjectFile
from pktassert.hooks.verdict import TcVerdict

THIRD_PARTY = Path(__file__).resolve().parent / "third_party"
BPF_EXAMPLES_DIR = THIRD_PARTY / "bpf-examples"
# Stands in for glibc's <gnu/stubs-32.h> (Debian's libc6-dev-i386) when that package is missing: see the file.
# bpf-examples' include/xdp/parsing_helpers.h reaches it as xdp-tutorial's copy does (<linux/icmp.h> ->
# <linux/if.h> -> <sys/socket.h>).
SHIM = THIRD_PARTY / "include-shim"
MULTIARCH = "/usr/include/x86_64-linux-gnu"

BPF_EXAMPLES = "xdp-project/bpf-examples@659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3"

BOTH_TIERS = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
LIVE = pytest.mark.parametrize("tier", ["live"], indirect=True)
UNIT = pytest.mark.parametrize("tier", ["unit"], indirect=True)
FORMS = pytest.mark.parametrize("form", ["source", "object"])

# bpf-examples lib/defines.mk (BPF_CFLAGS, DEFINES) and lib/common.mk:
#   $(CLANG) -target $(BPF_TARGET) $(BPF_CFLAGS) -O2 -c -g -o $@ $<
# with BPF_CFLAGS += -D__TARGET_ARCH_$(ARCH) -I$(INCLUDE_DIR) -I$(HEADER_DIR) -I$(LIB_DIR)/install/include.
# INCLUDE_DIR (../include) is vendored; HEADER_DIR (../headers, copies of uapi headers) and lib/install/include
# (libbpf's headers, installed from its submodule) are the system's here: /usr/include and libbpf-dev.
BPF_EXAMPLES_FLAGS = ("-Wall", "-Wno-unused-value", "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types",
                      "-Wno-visibility", "-Werror", "-fno-stack-protector",
                      '-DBPF_DIR_MNT="/sys/fs/bpf"', '-DBPF_OBJECT_PATH="/usr/local/lib/bpf"', "-D__TARGET_ARCH_x86")
INCLUDES = (BPF_EXAMPLES_DIR / "include", SHIM)


@dataclasses.dataclass(frozen=True)
class Vendored:
    source: Path
    includes: tuple[Path, ...] = INCLUDES
    flags: tuple[str, ...] = BPF_EXAMPLES_FLAGS
    max_entries: tuple[tuple[str, int], ...] = ()  # what its loader sizes before load

    @property
    def cflags(self) -> tuple[str, ...]:
        return tuple(f"-I{d}" for d in self.includes)


# pkt-loop-filter.c (the loader): bpf_map__set_max_entries(skel->maps.iface_state, 1024) before load.
LOOP_FILTER = Vendored(BPF_EXAMPLES_DIR / "pkt-loop-filter/pkt-loop-filter.kern.c",
                       max_entries=(("iface_state", 1024),))
PRESERVE_DSCP = Vendored(BPF_EXAMPLES_DIR / "preserve-dscp/preserve_dscp_kern.c")
PROGRAMS = {"pkt_loop_filter": LOOP_FILTER, "preserve_dscp": PRESERVE_DSCP}


@pytest.fixture(scope="session")
def third_party_tc_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each vendored program built as bpf-examples' Makefile builds it, into a session folder."""
    def command(clang: str, prog: Vendored, obj: Path) -> list[str]:
        return [clang, "-target", "bpf", *prog.flags, f"-I{prog.source.parent}", f"-I{MULTIARCH}",
                *prog.cflags, "-O2", "-c", "-g", "-o", str(obj), str(prog.source)]

    return build_all(PROGRAMS, tmp_path_factory.mktemp("third_party_tc_objects"), command)


def subject(name: str, func: str, form: str, objects: dict[str, Path], direction: str) -> LibbpfSource | ObjectFile:
    """The program in the form asked, attached where its loader attaches it (the tc_program override chooses
    the filter: no marker besides it, so both cannot disagree)."""
    prog = PROGRAMS[name]
    needs_clang()
    if form == "source":
        return LibbpfSource(prog.source, func, prog.cflags, hook="tc", max_entries=prog.max_entries, direction=direction)
    if form == "object":
        return ObjectFile(objects[name], func, hook="tc", max_entries=prog.max_entries, direction=direction)
    raise AssertionError(form)


def boot_ns() -> int:
    """bpf_ktime_get_boot_ns()'s clock, which pkt-loop-filter's expiry and lock times are in."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


SEC = 1_000_000_000
STATE_LIFETIME, LOCK_LIFETIME = 10 * SEC, 5 * SEC       # pkt-loop-filter.h
OTHER_HOST = "02:00:5e:00:53:42"                        # a source MAC the filter has no entry for
BROADCAST = "ff:ff:ff:ff:ff:ff"
IPV4_ALL_HOSTS_MAC, IPV6_MLDV2_MAC, IPV6_MCAST_MAC = "01:00:5e:00:00:01", "33:33:00:00:00:16", "33:33:00:00:00:01"


def loop_key(mac: str, vlan: int = 0) -> dict:
    """struct pkt_loop_key: the source MAC and skb->vlan_tci."""
    return {"src_mac": bytes.fromhex(mac.replace(":", "")), "src_vlan": vlan}


def seen_leaving(tc, mac: str, vlan: int = 0, expires_in: int = STATE_LIFETIME, locked_for: int | None = None,
                 ifindex: int = 7) -> None:
    """An iface_state entry as record_egress_pkt leaves it when ``mac`` (on ``vlan``) went out of another
    interface of the bond (``ifindex``): expiring ``expires_in`` ns from now, locked ``locked_for`` ns
    (after a gratuitous ARP), no drops yet."""
    now = boot_ns()
    tc.map("iface_state")[loop_key(mac, vlan)] = {
        "expiry_time": max(0, now + expires_in), "lock_time": 0 if locked_for is None else now + locked_for,
        "ifindex": ifindex, "drops": 0}


def on_the_dut(tc) -> dict:
    """The sk_buff fields of a frame arriving on the DUT's interface: the live tier's are the kernel's; in
    the unit tier a test run's skb_iif is 0 unless given, so the DUT's (loopback) index is given."""
    return {"ingress_ifindex": tc.ifindex} if tc.tier == "unit" else {}


def garp(mac: str, ip: str) -> Ether:
    """A gratuitous ARP: sender and target IP the same (what is_gratuitous_arp() checks), broadcast."""
    return Ether(src=mac, dst=BROADCAST) / ARP(op="who-has", hwsrc=mac, psrc=ip, pdst=ip)


def igmp_query(src_mac: str, dst_ip: str) -> Ether:
    """An IGMPv2 general query (group 0.0.0.0; scapy adds the router alert option as IGMP has it)."""
    return Ether(src=src_mac, dst=IPV4_ALL_HOSTS_MAC) / IP(dst=dst_ip) / IGMP(type=0x11, gaddr="0.0.0.0")


def mld_report(src_mac: str, dst_ip6: str, hop_by_hop: bool = False) -> Ether:
    """An MLDv2 report without records; ``hop_by_hop``: with the router alert header real ones carry."""
    ip6 = IPv6(dst=dst_ip6, hlim=1)
    if hop_by_hop:
        ip6 = ip6 / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
    return Ether(src=src_mac, dst=IPV6_MLDV2_MAC) / ip6 / ICMPv6MLReport2()


# --- pkt-loop-filter: filter_ingress_pkt ----------------------------------------------------------------------

SHOT, OK, REDIRECT = TcVerdict.SHOT, TcVerdict.OK, TcVerdict.REDIRECT


@FORMS
class TestLoopFilterIngress:
    """xdp-project/bpf-examples pkt-loop-filter/pkt-loop-filter.kern.c, `filter_ingress_pkt` (SEC("tc"),
    attached at ingress by pkt-loop-filter.c). README.org: "If a packet comes back in with a source MAC+VLAN
    that was already seen on egress, that packet is simply dropped (subject to a 10-second expiry time)";
    the code: each such drop counted in the entry's `drops`; a gratuitous ARP for a MAC whose lock time
    has passed expires its entry instead ("expiring filter"); "Only allow multicast on the currently
    active interface" (`active_ifindex`, set by the loader), IGMP, MLD reports and gratuitous ARP excepted."""

    @pytest.fixture
    def tc_program(self, form: str, third_party_tc_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("pkt_loop_filter", "filter_ingress_pkt", form, third_party_tc_objects, "ingress")

    @BOTH_TIERS
    def test_a_source_mac_seen_leaving_is_dropped_when_it_comes_back(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (+ pkt-loop-filter.h,
        bpf-defs.h, include/xdp/parsing_helpers.h), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        seen_leaving(tc, tc.peer.mac, ifindex=7)
        before = tc.map("iface_state")[loop_key(tc.peer.mac)]
        r = inject([IP(src="198.51.100.7", dst=tc.ip) / UDP(sport=4000, dport=53),
                    IP(src="198.51.100.7", dst=tc.ip) / TCP(dport=80, flags="S"),
                    IPv6(src="2001:db8::7", dst=tc.ip6) / ICMPv6EchoRequest(seq=1),
                    Ether(src=OTHER_HOST, dst=tc.mac) / IP(src="203.0.113.9", dst=tc.ip) / UDP(dport=53),
                    Ether(src=OTHER_HOST, dst=tc.mac) / IPv6(src="2001:db8::9", dst=tc.ip6) / TCP(dport=22)],
                   **on_the_dut(tc))
        assert r.verdicts == [SHOT, SHOT, SHOT, OK, OK]
        state = tc.map("iface_state")
        after = state[loop_key(tc.peer.mac)]
        assert after.drops == 3
        assert (after.expiry_time, after.lock_time, after.ifindex) == (before.expiry_time, 0, 7)
        assert len(state) == 1      # the ingress filter never adds entries

    @BOTH_TIERS
    def test_entries_expire(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (`value->expiry_time > now`),
        commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        packet = IP(src="198.51.100.7", dst=tc.ip) / UDP(dport=53)
        seen_leaving(tc, tc.peer.mac, expires_in=-SEC)          # left more than 10 s ago
        assert inject(packet, **on_the_dut(tc)).verdict == OK
        assert tc.map("iface_state")[loop_key(tc.peer.mac)].drops == 0
        seen_leaving(tc, tc.peer.mac, expires_in=SEC)           # left 9 s ago
        assert inject(packet, **on_the_dut(tc)).verdict == SHOT
        assert tc.map("iface_state")[loop_key(tc.peer.mac)].drops == 1

    @BOTH_TIERS
    def test_a_gratuitous_arp_expires_the_entry(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c ("Received gratuitous ARP
        for SMAC/vlan %llx, expiring filter"; is_gratuitous_arp(): sender IP == target IP), commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        seen_leaving(tc, tc.peer.mac)                            # lock time 0: long passed
        mac = tc.peer.mac
        r = inject([Ether(src=mac, dst=BROADCAST) / ARP(hwsrc=mac, psrc="198.51.100.7", pdst="198.51.100.8"),
                    garp(mac, "198.51.100.7"),
                    IP(src="198.51.100.7", dst=tc.ip) / UDP(dport=53)], **on_the_dut(tc))
        # An ordinary ARP request from the MAC is dropped as looped; the gratuitous one passes and
        # expires the entry; after it the MAC's traffic passes.
        assert r.verdicts == [SHOT, OK, OK]
        entry = tc.map("iface_state")[loop_key(mac)]
        assert entry.expiry_time == 0 and entry.drops == 1

    @BOTH_TIERS
    def test_a_gratuitous_arp_while_the_entry_is_locked_is_dropped(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (`value->lock_time < now`;
        record_egress_pkt locks an entry for LOCK_LIFETIME = 5 s after a gratuitous ARP left), commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        seen_leaving(tc, tc.peer.mac, locked_for=LOCK_LIFETIME)
        expiry = tc.map("iface_state")[loop_key(tc.peer.mac)].expiry_time
        r = inject([garp(tc.peer.mac, "198.51.100.7"), IP(src="198.51.100.7", dst=tc.ip) / UDP(dport=53)],
                   **on_the_dut(tc))
        assert r.verdicts == [SHOT, SHOT]
        entry = tc.map("iface_state")[loop_key(tc.peer.mac)]
        assert entry.drops == 2 and entry.expiry_time == expiry

    @BOTH_TIERS
    def test_multicast_passes_only_on_the_active_interface(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c ("Only allow multicast on
        the currently active interface"; parse_pkt() classes IGMP, MLD reports and gratuitous ARP apart from
        multicast), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. The addresses in the IP headers are
        from the documentation ranges: the filter decides by the destination MAC and the protocol only."""
        peer = tc.peer.mac
        packets = [Ether(src=peer, dst=tc.mac) / IP(dst=tc.ip) / UDP(dport=53),                       # unicast
                   Ether(src=peer, dst=BROADCAST) / ARP(psrc="198.51.100.7", pdst=tc.ip),              # broadcast
                   Ether(src=peer, dst="01:00:5e:00:00:fb") / IP(dst=tc.ip) / UDP(dport=5353),          # IPv4 mcast
                   Ether(src=peer, dst=IPV6_MCAST_MAC) / IPv6(dst=tc.ip6) / ICMPv6EchoRequest(),         # IPv6 mcast
                   igmp_query(peer, tc.ip),                                                             # IGMP
                   mld_report(peer, tc.ip6, hop_by_hop=True),                                           # MLDv2
                   Ether(src=peer, dst=IPV6_MLDV2_MAC) / IPv6(dst=tc.ip6) / ICMPv6MLReport(mladdr="::"),  # MLDv1
                   garp(peer, "198.51.100.7")]                                                          # GARP
        assert packets[4][IP].proto == 2
        r = inject(packets, **on_the_dut(tc))
        assert r.verdicts == [OK, SHOT, SHOT, SHOT, OK, OK, OK, OK]   # active_ifindex is 0: not this interface
        tc.globals["active_ifindex"] = tc.ifindex                      # as the loader sets it for the active slave
        r = inject(packets, **on_the_dut(tc))
        assert r.verdicts == [OK] * len(packets)
        assert len(tc.map("iface_state")) == 0

    @BOTH_TIERS
    def test_ipv6_extension_headers_are_skipped_to_find_a_report(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c and include/xdp/parsing_helpers.h
        (parse_ip6hdr() -> skip_ip6hdrext()), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. Real MLD reports
        come behind a Hop-by-Hop router alert header (RFC 3810, 5.); the filter classes them as reports (passed on
        any interface), while other multicast behind the same header is still multicast (dropped here)."""
        hbh = IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
        r = inject([mld_report(tc.peer.mac, tc.ip6, hop_by_hop=True),
                    Ether(dst=IPV6_MLDV2_MAC) / IPv6(dst=tc.ip6, hlim=1) / hbh / IPv6ExtHdrDestOpt() / ICMPv6MLReport2(),
                    Ether(dst=IPV6_MCAST_MAC) / IPv6(dst=tc.ip6) / hbh / ICMPv6EchoRequest()],
                   **on_the_dut(tc))
        assert r.verdicts == [OK, OK, SHOT]

    @UNIT
    def test_multicast_is_judged_by_the_ingress_ifindex(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c
        (`skb->ingress_ifindex != act_ifindex`), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. The unit tier
        sets the sk_buff's ingress_ifindex: interfaces 3 and 4 are a bond's two slaves, 3 the active one."""
        tc.globals["active_ifindex"] = 3
        broadcast = Ether(dst=BROADCAST) / ARP(psrc="198.51.100.7", pdst="198.51.100.8")
        assert inject(broadcast, ingress_ifindex=3).verdict == OK
        assert inject(broadcast, ingress_ifindex=4).verdict == SHOT
        assert inject(Ether(dst=tc.mac) / IP(dst=tc.ip) / UDP(dport=53), ingress_ifindex=4).verdict == OK

    @LIVE
    def test_the_vlan_is_part_of_the_key(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (`key->src_vlan =
        skb->vlan_tci`), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. Live tier only: the receive path
        moves a frame's 802.1Q tag into skb->vlan_tci before tc ingress; a test run leaves it in the frame
        (vlan_tci 0)."""
        seen_leaving(tc, tc.peer.mac, vlan=5)
        r = inject([Ether(dst=tc.mac) / Dot1Q(vlan=5) / IP(dst=tc.ip) / UDP(dport=53),
                    Ether(dst=tc.mac) / Dot1Q(vlan=6) / IP(dst=tc.ip) / UDP(dport=53),
                    Ether(dst=tc.mac) / IP(dst=tc.ip) / UDP(dport=53)])
        assert r.verdicts == [SHOT, OK, OK]
        assert tc.map("iface_state")[loop_key(tc.peer.mac, 5)].drops == 1

    @LIVE
    def test_looped_packets_never_reach_the_stack(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c, commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        seen_leaving(tc, tc.peer.mac)
        r = inject([IP(dst=tc.ip) / ICMP(id=7, seq=s) for s in (1, 2)])
        assert r.verdicts == [SHOT, SHOT]
        seen_leaving(tc, tc.peer.mac, expires_in=-SEC)
        r = inject([IP(dst=tc.ip) / ICMP(id=7, seq=s) for s in (3, 4)])
        assert r.verdicts == [OK, OK]
        replies = [p for p in tc.received_by_peer() if ICMP in p and p[ICMP].type == 0]
        assert sorted(p[ICMP].seq for p in replies) == [3, 4]     # the DUT answered only what passed


# --- pkt-loop-filter: record_egress_pkt -----------------------------------------------------------------------

@FORMS
class TestLoopFilterEgress:
    """xdp-project/bpf-examples pkt-loop-filter/pkt-loop-filter.kern.c, `record_egress_pkt` (SEC("tc"),
    attached at egress by pkt-loop-filter.c). README.org: "keeping track of the source VLAN+MAC on every
    packet going out any of the included interfaces" and "The BPF programs will record which interface a
    given source MAC+VLAN was last seen on"; the code: expiry now + STATE_LIFETIME (10 s), lock now +
    LOCK_LIFETIME (5 s) for a gratuitous ARP; IGMP and MLD reports leaving by another interface than the
    active one are redirected to it (bpf_redirect) and not recorded; every other frame TC_ACT_OK."""

    @pytest.fixture
    def tc_program(self, form: str, third_party_tc_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("pkt_loop_filter", "record_egress_pkt", form, third_party_tc_objects, "egress")

    @BOTH_TIERS
    def test_the_source_mac_of_a_packet_that_leaves_is_recorded(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (+ pkt-loop-filter.h),
        commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        t0 = boot_ns()
        r = inject.from_dut(IP(dst=tc.peer.ip) / UDP(sport=5000, dport=53))
        t1 = boot_ns()
        assert r.verdict == OK
        state = tc.map("iface_state")
        assert len(state) == 1
        entry = state[loop_key(tc.dut.mac)]
        assert t0 + STATE_LIFETIME <= entry.expiry_time <= t1 + STATE_LIFETIME
        assert (entry.lock_time, entry.ifindex, entry.drops) == (0, tc.ifindex, 0)

    @BOTH_TIERS
    def test_a_gratuitous_arp_that_leaves_locks_the_entry(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (`v->lock_time = now +
        LOCK_LIFETIME` for PKT_TYPE_GRATUITOUS_ARP), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        t0 = boot_ns()
        r = inject.from_dut(garp(tc.dut.mac, tc.ip))
        t1 = boot_ns()
        assert r.verdict == OK
        entry = tc.map("iface_state")[loop_key(tc.dut.mac)]
        assert t0 + LOCK_LIFETIME <= entry.lock_time <= t1 + LOCK_LIFETIME
        assert t0 + STATE_LIFETIME <= entry.expiry_time <= t1 + STATE_LIFETIME

    @BOTH_TIERS
    def test_igmp_and_mld_reports_leave_only_by_the_active_interface(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c ("Redirecting IGMP from %d
        to active %d"; `return bpf_redirect(act_ifindex, 0)`), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        igmp_mld = [igmp_query(tc.dut.mac, tc.peer.ip), mld_report(tc.dut.mac, tc.peer.ip6, hop_by_hop=True)]
        r = inject.from_dut(igmp_mld)
        assert r.verdicts == [REDIRECT, REDIRECT]                  # active_ifindex 0: another interface
        assert len(tc.map("iface_state")) == 0                    # redirected before anything is recorded
        tc.globals["active_ifindex"] = tc.ifindex                  # this interface is the active one
        r = inject.from_dut(igmp_mld)
        assert r.verdicts == [OK, OK]
        assert tc.map("iface_state")[loop_key(tc.dut.mac)].ifindex == tc.ifindex

    @BOTH_TIERS
    def test_other_multicast_is_recorded_and_leaves(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c (record_egress_pkt redirects
        PKT_TYPE_IGMP only), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        r = inject.from_dut([Ether(dst="01:00:5e:00:00:fb") / IP(dst=tc.peer.ip) / UDP(dport=5353),
                             Ether(dst=BROADCAST) / ARP(psrc=tc.ip, pdst=tc.peer.ip)])
        assert r.verdicts == [OK, OK]
        assert tc.map("iface_state")[loop_key(tc.dut.mac)].drops == 0

    @LIVE
    def test_igmp_is_redirected_out_of_the_active_interface(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c, commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. The honeypot's port stands for the bond's active slave."""
        tc.globals["active_ifindex"] = tc.honeypot.ifindex
        r = inject.from_dut([igmp_query(tc.dut.mac, tc.peer.ip), IP(dst=tc.peer.ip) / UDP(sport=5001, dport=53)])
        assert r.verdicts == [REDIRECT, OK]
        assert [p[IP].proto for p in tc.honeypot.received() if IP in p] == [2]
        at_peer = [p for p in tc.received_by_peer() if IP in p]
        assert [p[IP].proto for p in at_peer] == [17] and at_peer[0][UDP].sport == 5001

    @UNIT
    def test_every_source_mac_that_leaves_is_recorded(self, tc, inject):
        """Origin: xdp-project/bpf-examples, pkt-loop-filter/pkt-loop-filter.kern.c and pkt-loop-filter.c
        (the loader, which sizes iface_state to 1024 before load: max_entries= here), commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        r = inject.from_dut([IP(dst=tc.peer.ip) / UDP(dport=53),
                             Ether(src=OTHER_HOST, dst=tc.peer.mac) / IP(dst=tc.peer.ip) / UDP(dport=53)])
        assert r.verdicts == [OK, OK]
        recorded = {key.src_mac for key, _ in tc.map("iface_state").items()}
        assert recorded == {loop_key(mac)["src_mac"] for mac in (tc.dut.mac, OTHER_HOST)}


# --- preserve-dscp ---------------------------------------------------------------------------------------------

def dscp_of(frame: Ether) -> int:
    return (frame[IP].tos if IP in frame else frame[IPv6].tc) >> 2


def ipv4_checksum_ok(frame: Ether) -> bool:
    header = bytes(frame[IP])[:frame[IP].ihl * 4]
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@FORMS
class TestPreserveDscpRead:
    """xdp-project/bpf-examples preserve-dscp/preserve_dscp_kern.c, `read_dscp` (SEC("tc"), attached at egress
    of the inner interface by preserve-dscp.c). README.org: it "parses the packet header and reads the DSCP
    value out of the packet, then stores that value in a map keyed on the skb->hash value (which is
    calculated if it isn't already set)"; the code: a packet without DSCP deletes its flow's entry; always
    TC_ACT_OK."""

    @pytest.fixture
    def tc_program(self, form: str, third_party_tc_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("preserve_dscp", "read_dscp", form, third_party_tc_objects, "egress")

    @BOTH_TIERS
    def test_each_flow_s_dscp_is_remembered(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (+ include/xdp/parsing_helpers.h),
        commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        r = inject.from_dut([IP(dst=tc.peer.ip, tos=46 << 2) / UDP(sport=4000, dport=53),              # EF
                             IP(dst=tc.peer.ip, tos=10 << 2 | 1) / TCP(sport=4001, dport=80),          # AF11, ECT(1)
                             Ether(dst=tc.peer.mac) / Dot1Q(vlan=3) / IP(dst=tc.peer.ip, tos=34 << 2)  # AF41, tagged
                             / UDP(sport=4002, dport=53),
                             IP(dst=tc.peer.ip, tos=0) / UDP(sport=4003, dport=53),                    # best effort
                             IPv6(dst=tc.peer.ip6, tc=0) / UDP(sport=4004, dport=53)])                 # best effort
        assert r.verdicts == [OK] * 5
        assert sorted(dict(tc.map("flow_dscps").items()).values()) == [10, 34, 46]   # one entry per marked flow

    @BOTH_TIERS
    def test_the_latest_dscp_of_a_flow_counts_and_none_forgets_it(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (bpf_map_update_elem(BPF_ANY) /
        bpf_map_delete_elem), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        def flow(sport: int, dscp: int, ecn: int = 0) -> IP:
            return IP(dst=tc.peer.ip, tos=dscp << 2 | ecn) / UDP(sport=sport, dport=53)

        dscps = tc.map("flow_dscps")
        assert inject.from_dut([flow(4000, 46), flow(4001, 26)]).verdicts == [OK, OK]
        assert sorted(dict(dscps.items()).values()) == [26, 46]
        assert inject.from_dut(flow(4000, 12)).verdict == OK
        assert sorted(dict(dscps.items()).values()) == [12, 26]              # re-marked: the same flow's entry
        r = inject.from_dut([flow(4000, 0, ecn=3), Ether(dst=BROADCAST) / ARP(psrc=tc.ip, pdst=tc.peer.ip)])
        assert r.verdicts == [OK, OK]                                        # CE but DSCP 0; ARP: no DSCP
        assert list(dict(dscps.items()).values()) == [26]                    # flow 4000 forgotten, 4001 kept

    @BOTH_TIERS
    @pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "bug in the vendored program, not in pktassert: get_dscp() returns `bpf_ntohs(*(__u16 *)ipv6hdr) >> 4` "
        "truncated to __u8, which is the whole IPv6 Traffic Class byte (DSCP << 2 | ECN), not the DSCP (that "
        "would be >> 6): an IPv6 packet with DSCP 10 and ECT(1) is stored as 41 (and one with DSCP 0 but an "
        "ECN bit set as a nonzero 'DSCP')."))
    def test_an_ipv6_flow_s_dscp_is_remembered(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (get_dscp(), its IPv6 branch), commit
        659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3. README.org: "reads the DSCP value out of the packet"."""
        r = inject.from_dut([IPv6(dst=tc.peer.ip6, tc=10 << 2 | 1) / TCP(sport=4001, dport=80),     # AF11, ECT(1)
                             IPv6(dst=tc.peer.ip6, tc=46 << 2) / UDP(sport=4002, dport=53)])       # EF
        assert r.verdicts == [OK, OK]
        assert sorted(dict(tc.map("flow_dscps").items()).values()) == [10, 46]


@FORMS
class TestPreserveDscpWrite:
    """xdp-project/bpf-examples preserve-dscp/preserve_dscp_kern.c, `write_dscp` (SEC("tc"), attached at egress
    of the outer interface). README.org: "the second TC filter reads back the skb->hash value, looks it up in
    the map, and if found rewrites the packet DSCP based on that value"; the code keeps the ECN bits and
    updates the IPv4 header checksum (ipv4_change_dsfield); always TC_ACT_OK.

    The packets here carry no hash (skb->hash 0: a test run's sk_buff, and the live tier's from a packet
    socket, never had one computed), so the flow's entry is the map's key 0."""

    @pytest.fixture
    def tc_program(self, form: str, third_party_tc_objects: dict[str, Path]) -> LibbpfSource | ObjectFile:
        return subject("preserve_dscp", "write_dscp", form, third_party_tc_objects, "egress")

    @staticmethod
    def left(tc, r, port: int) -> list[Ether]:
        """The frames as they left: unit tier, as the program left them; live tier, as the peer got them."""
        if tc.tier == "unit":
            return list(r.outputs)
        return [p for p in tc.received_by_peer() if (UDP in p and p[UDP].dport == port)
                or (TCP in p and p[TCP].dport == port)]

    @BOTH_TIERS
    def test_the_flow_s_dscp_is_written_back_keeping_ecn(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (set_dscp(),
        ipv4_change_dsfield(), ipv6_change_dsfield()), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        tc.map("flow_dscps")[0] = 46
        sent = [IP(dst=tc.peer.ip, tos=ecn, id=0x1234 + ecn) / UDP(sport=6000 + ecn, dport=9) for ecn in range(4)]
        sent += [IPv6(dst=tc.peer.ip6, tc=8 << 2 | 2, fl=0xABCDE) / TCP(sport=6100, dport=9)]
        r = inject.from_dut(sent)
        assert r.verdicts == [OK] * 5
        out = self.left(tc, r, 9)
        assert len(out) == 5
        assert [dscp_of(f) for f in out] == [46] * 5
        assert [f[IP].tos & 3 for f in out if IP in f] == [0, 1, 2, 3]     # ECN kept
        assert all(ipv4_checksum_ok(f) for f in out if IP in f)
        v6 = next(f for f in out if IPv6 in f)
        assert (v6[IPv6].tc, v6[IPv6].fl) == (46 << 2 | 2, 0xABCDE)        # flow label untouched

    @UNIT
    def test_the_ipv4_checksum_stays_right_for_every_tos(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (ipv4_change_dsfield(), its
        incremental checksum update), commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        for dscp in (0, 10, 46, 63):
            tc.map("flow_dscps")[0] = dscp
            r = inject.from_dut([IP(dst=tc.peer.ip, tos=tos, id=tos * 257) / UDP(dport=9) for tos in range(256)])
            assert r.count(OK) == 256
            out = r.outputs
            assert [f[IP].tos for f in out] == [dscp << 2 | tos & 3 for tos in range(256)]
            bad = [tos for tos, f in enumerate(out) if not ipv4_checksum_ok(f)]
            assert bad == [], f"DSCP {dscp}: wrong IPv4 checksum after rewriting tos {bad[:8]}"

    @BOTH_TIERS
    def test_flows_not_in_the_map_leave_unchanged(self, tc, inject):
        """Origin: xdp-project/bpf-examples, preserve-dscp/preserve_dscp_kern.c (`if (dscp) set_dscp(...)`),
        commit 659ce29ebfc40ff1819b23a9c4b3a5d14b44ece3."""
        tc.map("flow_dscps")[0x5EED] = 46                           # another flow's hash
        sent = [IP(dst=tc.peer.ip, tos=10 << 2) / UDP(sport=6200, dport=7), IPv6(dst=tc.peer.ip6) / UDP(dport=7)]
        r = inject.from_dut(sent)
        assert r.verdicts == [OK, OK]
        out = self.left(tc, r, 7)
        assert [bytes(f) for f in out] == [r.frame(0), r.frame(1)]
        if tc.tier == "unit":
            assert len(r.rewritten()) == 0
