"""compare(A, B, traffic): the same packets through both subjects in the kernel, and where they differ
(issue 22): two revisions of one file (a path, and git:REV:PATH), bcc vs libbpf vs object builds of one
filter, an XDP filter vs its tc port, a rule set vs an XDP filter claiming the same policy, and two rule
set versions, live."""

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from suite_files import tshark_fields

from pktassert import BccSource, Fate, LibbpfSource, ObjectFile, ProgramError
from pktassert.compare import compare, search
from pktassert.errors import InjectError
from pktassert.netns.topology import DUT_IP
from pktassert.traffic.source import Traffic

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BLOCKLIST = EXAMPLES / "port_blocklist.bpf.c"
SWEEP = Traffic.flood(IP(dst=DUT_IP) / TCP(), 65536, {"dport": (0, 65535)}) | \
    Traffic.flood(IP(dst=DUT_IP) / UDP(), 65536, {"dport": (0, 65535)})
# One filter at both hooks: XDP and its tc port, the port with a bug (it drops 24 as well).
BOTH_HOOKS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

static __always_inline int dport(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > end || eth->h_proto != bpf_htons(0x0800) || ip->protocol != 6 || ip->ihl != 5)
		return -1;
	return bpf_ntohs(tcp->dest);
}

SEC("xdp")
int block_xdp(struct xdp_md *ctx)
{
	return dport((void *)(long)ctx->data, (void *)(long)ctx->data_end) == 23 ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int block_tc(struct __sk_buff *skb)
{
	int p = dport((void *)(long)skb->data, (void *)(long)skb->data_end);
	return p == 23 || p == 24 ? 2 /* TC_ACT_SHOT */ : 0 /* TC_ACT_OK */;
}

char LICENSE[] SEC("license") = "GPL";
"""
RULES = """
table inet claimed {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport %s drop
  }
}
"""
XDP_DROP_23 = BccSource("int drop23(struct xdp_md *ctx) {\n"
                        "  void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;\n"
                        "  struct ethhdr *eth = d; struct iphdr *ip = (void *)(eth + 1); struct tcphdr *t = (void *)(ip + 1);\n"
                        "  if ((void *)(t + 1) > e || eth->h_proto != htons(0x0800) || ip->protocol != 6) return XDP_PASS;\n"
                        "  return ntohs(t->dest) == 23 ? XDP_DROP : XDP_PASS;\n}", "drop23")

pytestmark = [pytest.mark.usefixtures("pktassert_ready"),
              pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")]


def _blocking(tmp_path: Path, name: str, *extra: int) -> Path:
    """examples/port_blocklist.bpf.c with more ports blocked by default."""
    text = BLOCKLIST.read_text()
    cases = "".join(f"\tcase {p}:\n" for p in extra)
    path = tmp_path / name
    path.write_text(text.replace("\tcase 23:", cases + "\tcase 23:", 1))
    return path


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


def test_two_revisions_from_git_differ_exactly_where_the_change_is(tmp_path):
    repo = tmp_path / "repo"
    (repo / "filters").mkdir(parents=True)
    _git(repo, "init", "-q")
    path = repo / "filters" / "blocklist.bpf.c"
    path.write_text(BLOCKLIST.read_text())
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "v1")
    path.write_text(_blocking(tmp_path, "v2.bpf.c", 2323).read_text())
    _git(repo, "commit", "-qam", "v2: block 2323 too")

    diff = compare(f"git:HEAD~1:{path}", path, SWEEP, func="port_blocklist")
    assert diff.sent == 131072 and len(diff) == 2, diff  # TCP and UDP to 2323
    (one,) = diff.classes  # one class: both answer alike, the fields tell it apart
    assert one.fields == {"dport": "2323"} and (one.a.verdict, one.b.verdict) == ("PASS", "DROP"), diff
    assert diff.only(dport=2323) and not diff.only(dport=23) and not diff.only(TCP), diff
    assert "2323" in str(diff) and "PASS" in str(diff) and "DROP" in str(diff)

    same = compare(f"git:HEAD:{path}", path, SWEEP, func="port_blocklist")
    assert not same and len(same) == 0 and not same.only(dport=2323), same  # nothing changed: only() is False
    assert "no difference" in str(same)


def test_bcc_libbpf_and_object_builds_of_one_filter_agree():
    bcc = BccSource(EXAMPLES / "port_blocklist.c", "port_blocklist")
    libbpf = LibbpfSource(BLOCKLIST, "port_blocklist")
    obj = ObjectFile(EXAMPLES / "build" / "port_blocklist.bpf.o", "port_blocklist")
    assert not compare(bcc, libbpf, SWEEP)
    assert not compare(libbpf, obj, SWEEP)


def test_a_changed_build_is_told_from_the_object(tmp_path):
    obj = ObjectFile(EXAMPLES / "build" / "port_blocklist.bpf.o", "port_blocklist")
    diff = compare(obj, _blocking(tmp_path, "more.bpf.c", 8080, 8443), SWEEP, func="port_blocklist")
    assert len(diff) == 4 and diff.only(dport=[8080, 8443]) and not diff.only(dport=8080), diff


def test_an_xdp_filter_and_its_tc_port_compare_by_what_the_verdict_does(tmp_path):
    source = tmp_path / "both.bpf.c"
    source.write_text(BOTH_HOOKS)
    sweep = Traffic.flood(IP(dst=DUT_IP) / TCP(), 1024, {"dport": (0, 1023)})
    diff = compare(source, source, sweep, func=("block_xdp", "block_tc"), hook=("xdp", "tc"))
    assert "what the verdict does" in diff.keyed_by
    (one,) = diff.classes
    assert one.fields == {"dport": "24"} and (one.a.verdict, one.b.verdict) == ("PASS", "SHOT"), diff
    assert diff.only(dport=24)


def test_a_rule_set_and_an_xdp_filter_claiming_one_policy_agree_live(tmp_path):
    sweep = Traffic.flood(IP(dst=DUT_IP) / TCP(flags="S"), 64, {"dport": (0, 63)})
    rules = tmp_path / "policy.nft"
    rules.write_text(RULES % "23")
    diff = compare(rules, XDP_DROP_23, sweep)
    assert diff.tier == "live" and "fate" in diff.keyed_by and not diff, diff

    rules.write_text(RULES % "22-23")  # the rule set claims more than the filter does
    diff = compare(rules, XDP_DROP_23, sweep)
    (one,) = diff.classes
    assert one.fields == {"dport": "22"} and one.a.fate == "NETFILTER_DROPPED" and one.b.fate != "FILTER_DROPPED", diff
    assert one.a.rule is not None and "dport 22-23 drop" in one.a.rule, diff  # the rule that decided, live
    assert diff.only(dport=22)


def test_two_versions_of_the_edge_firewall_differ_in_the_rule_that_changed(tmp_path):
    changed = tmp_path / "edge.nft"
    changed.write_text((EXAMPLES / "edge_firewall.nft").read_text().replace("tcp dport 443 accept",
                                                                           "tcp dport { 443, 8443 } accept"))
    sweep = Traffic.flood(IP(dst=DUT_IP, src="203.0.113.9") / TCP(flags="S"), 512, {"dport": (8000, 8511)}) | \
        [IP(dst=DUT_IP, src="203.0.113.9") / TCP(dport=443, flags="S")]
    diff = compare(EXAMPLES / "edge_firewall.nft", changed, sweep)
    (one,) = diff.classes
    assert one.fields == {"dport": "8443"} and one.count == 1, diff
    assert one.a.fate == "NETFILTER_DROPPED" and one.b.fate != "NETFILTER_DROPPED", diff
    assert one.b.rule is not None and "8443" in one.b.rule, diff


def test_what_inject_sent_is_traffic_too(tmp_path, dut, inject):
    sent = inject([IP(dst=dut.ip) / TCP(dport=p) for p in (22, 23, 2323)])  # live, through the pass-through
    diff = compare(BLOCKLIST, _blocking(tmp_path, "cap.bpf.c", 2323), sent, func="port_blocklist")
    assert diff.sent == 3 and len(diff) == 1 and diff.only(dport=2323), diff


def test_what_a_user_can_get_wrong_is_one_clear_error(tmp_path):
    rules = tmp_path / "r.nft"
    rules.write_text(RULES % "23")
    with pytest.raises(ProgramError, match="unit tier.*Fix: tier=\"live\""):
        compare(rules, XDP_DROP_23, [IP(dst=DUT_IP) / TCP()], tier="unit")
    with pytest.raises(ProgramError, match="func="):
        compare(BLOCKLIST, BLOCKLIST, [IP(dst=DUT_IP) / TCP()])
    with pytest.raises(ProgramError, match="git cannot give that file.*Fix"):
        compare(f"git:no-such-rev:{BLOCKLIST}", BLOCKLIST, [IP(dst=DUT_IP) / TCP()], func="port_blocklist")
    with pytest.raises(ProgramError, match="does not exist"):
        compare(tmp_path / "nope.bpf.c", BLOCKLIST, [IP(dst=DUT_IP) / TCP()], func="port_blocklist")
    with pytest.raises(InjectError, match="no packet"):
        compare(BLOCKLIST, BLOCKLIST, [], func="port_blocklist")
    with pytest.raises(InjectError, match="not a packet"):
        compare(BLOCKLIST, BLOCKLIST, [42], func="port_blocklist")


FAILING = '''
from pathlib import Path
from scapy.layers.inet import IP, TCP
from pktassert.compare import compare, search
from pktassert.traffic.source import Traffic

def test_new_blocklist_changes_only_telnet():
    new = Path("new.bpf.c")
    new.write_text(Path(%r).read_text().replace("\\tcase 23:", "\\tcase 2323:\\n\\tcase 23:", 1))
    diff = compare(%r, new, Traffic.flood(IP(dst="192.0.2.1") / TCP(), 4096, {"dport": (0, 4095)}),
                   func="port_blocklist")
    assert diff.only(dport=23), diff
'''


def test_a_failed_comparison_shows_its_table_and_leaves_the_differing_packets_as_pcapng(pytester):
    pytester.makepyfile(test_suite=FAILING % (str(BLOCKLIST), str(BLOCKLIST)))
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "1 of 4,096 packets differ" in out and "dport=2323" in out and "PASS" in out and "DROP" in out, out
    files = list(pytester.path.glob("pktassert-evidence/run-*/*compare1.pcapng"))
    assert len(files) == 1 and str(files[0]) in out, out
    (row,) = tshark_fields(files[0], "tcp.dstport", "frame.comment")
    assert row[0] == "2323" and "A (" in row[1] and ": PASS" in row[1] and "B (new.bpf.c): DROP" in row[1], row


RANGE_GUARD = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int range_guard(struct xdp_md *ctx)
{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	struct ethhdr *eth = d;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *t = (void *)(ip + 1);
	if ((void *)(t + 1) > e || eth->h_proto != bpf_htons(0x0800) || ip->protocol != 6)
		return XDP_PASS;
	__u16 p = bpf_ntohs(t->dest);
	return p >= 1000 && p <= LAST ? XDP_DROP : XDP_PASS;  /* meant: 1000..1999 */
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_search_finds_a_planted_off_by_one_shrinks_it_to_one_packet_and_replays_it_live(tmp_path):
    from hypothesis import strategies as st

    source = tmp_path / "range_guard.bpf.c"
    source.write_text(RANGE_GUARD)
    meant = LibbpfSource(source, "range_guard", cflags=("-DLAST=1999",))
    planted = LibbpfSource(source, "range_guard", cflags=("-DLAST=2000",))
    packets = st.builds(lambda port, sport: IP(dst=DUT_IP) / TCP(sport=sport, dport=port),
                        st.integers(1950, 2050), st.integers(1024, 65535))
    diff = search(meant, planted, packets, max_examples=1000)
    assert diff.tier == "live" and diff.sent == 1 and len(diff) == 1, diff  # the one packet, replayed live
    (one,) = diff.classes
    assert Ether(one.packet)[TCP].dport == 2000 and Ether(one.packet)[TCP].sport == 1024, diff  # shrunk: simplest
    assert (one.a.verdict, one.b.verdict) == ("PASS", "DROP") and one.b.fate == "FILTER_DROPPED", diff

    assert not search(meant, meant, packets, max_examples=100)  # none to find: an empty Diff


def test_the_stacks_rate_limited_answers_are_not_a_difference():
    # A flood to a closed UDP port: the stack answers some packets with an ICMP error and drops the rest
    # unanswered (its ICMP rate limit), at moments that differ from run to run. The same filter twice is
    # no difference, though each run's fates fall differently.
    closed = Traffic.flood(IP(dst=DUT_IP) / UDP(dport=9), 3000, {"sport": (1024, 4023)})
    diff = compare(BLOCKLIST, BLOCKLIST, closed, func="port_blocklist", tier="live")
    a, b = diff.a_captures[0], diff.b_captures[0]
    assert set(a.fates()) | set(b.fates()) >= {Fate.ANSWERED, Fate.DROPPED}, (a.fates(), b.fates())  # both met
    assert not diff, diff
