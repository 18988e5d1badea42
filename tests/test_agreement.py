"""Agreement: the example suite, unchanged, in both tiers; every packet must get the same verdict and
the same parsed fields in the unit tier (BPF_PROG_TEST_RUN) as over the veth, and the same in each
form of a filter (bcc source, libbpf source, the object its Makefile built). A disagreement is a bug
in pktassert, never noise.

With the examples runs a corpus of VLAN-tagged frames (VLAN_CORPUS) through tc filters that parse them
each their own way (tests/libbpf/vlan_filters.bpf.c) and through the example tc filters, at ingress
(where the kernel has taken the outer tag into the sk_buff before tc) and at egress (where it has not)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from suite_files import copy_examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VLAN_FILTERS = Path(__file__).resolve().parent / "libbpf" / "vlan_filters.bpf.c"
VLAN_CORPUS = '''
"""VLAN-tagged frames (no tag, one, QinQ, three; 802.1Q and 802.1ad outside) through tc filters: each
filter of vlan_filters.bpf.c that a test run can show (not the ones that read the sk_buff's own tag
at ingress), and the example tc filters, at ingress and at egress."""
import itertools
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from pktassert import BccSource, LibbpfSource

HERE = Path(__file__).parent
STACKS = [(), (Dot1Q(vlan=10),), (Dot1AD(vlan=20), Dot1Q(vlan=30)), (Dot1Q(vlan=666),), (Dot1AD(vlan=5), Dot1Q(vlan=666)),
          (Dot1Q(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)), (Dot1Q(vlan=4095, prio=7),), (Dot1AD(vlan=7),)]
FILTERS = {  # id: (form, file, function, direction)
    "dns_by_h_proto-in": ("libbpf", "vlan_filters.bpf.c", "dns_by_h_proto", "ingress"),
    "dns_by_skb_protocol-in": ("libbpf", "vlan_filters.bpf.c", "dns_by_skb_protocol", "ingress"),
    "dns_through_tags-in": ("libbpf", "vlan_filters.bpf.c", "dns_through_tags", "ingress"),
    "remark_dns-in": ("libbpf", "vlan_filters.bpf.c", "remark_dns", "ingress"),
    "mark_guard-in": ("bcc", "mark_guard.c", "mark_guard", "ingress"),
    "dns_by_h_proto-out": ("libbpf", "vlan_filters.bpf.c", "dns_by_h_proto", "egress"),
    "dns_by_skb_protocol-out": ("libbpf", "vlan_filters.bpf.c", "dns_by_skb_protocol", "egress"),
    "dns_through_tags-out": ("libbpf", "vlan_filters.bpf.c", "dns_through_tags", "egress"),
    "drop_vlan_10-out": ("libbpf", "vlan_filters.bpf.c", "drop_vlan_10", "egress"),
    "egress_guard-out": ("libbpf", "egress_guard.bpf.c", "egress_guard", "egress"),
}


def frames(src, dst, ip, ip6):
    """Every tag stack with every payload: IPv4 and IPv6, UDP and TCP to the ports the filters judge, ARP."""
    payloads = [IP(dst=ip) / UDP(dport=53), IP(dst=ip) / UDP(dport=54), IP(dst=ip) / TCP(dport=22, flags="S"),
                IPv6(dst=ip6) / UDP(dport=53), IPv6(dst=ip6) / TCP(dport=8443, flags="S"), ARP(pdst=ip)]
    out = []
    for stack, payload in itertools.product(STACKS, payloads):
        frame = Ether(src=src, dst=dst)
        for tag in stack:
            frame = frame / tag.copy()
        out.append(frame / payload.copy())
    return out


@pytest.fixture(params=list(FILTERS))
def tc_program(request):
    form, name, func, direction = FILTERS[request.param]
    kind = BccSource if form == "bcc" else LibbpfSource
    return kind(HERE / name, func, hook="tc", **({"direction": direction} if direction == "egress" else {}))


def test_tagged_frames(tc, inject):
    if tc.direction == "ingress":
        send, src, dst, ip, ip6 = inject, tc.peer.mac, tc.mac, tc.ip, tc.ip6
    else:
        send, src, dst, ip, ip6 = inject.from_dut, tc.mac, tc.peer.mac, tc.peer.ip, tc.peer.ip6
    if "blocked_dports" in tc.maps:
        tc.map("blocked_dports")[53] = 1
    sent = frames(src, dst, ip, ip6)
    assert len(send(sent)) == len(sent)
    one = Ether(src=src, dst=dst) / Dot1Q(vlan=10) / IP(dst=ip) / UDP(sport=1, dport=53)
    two = Ether(src=src, dst=dst) / Dot1AD(vlan=20) / Dot1Q(vlan=30) / IP(dst=ip) / UDP(sport=1, dport=53)
    for template in (one, two):  # floods: the traffic engine live at ingress; one batch of test runs each
        flood = send(template, count=2000, vary={"sport": (1, 2000), "dport": [53, 54, 22, 8443]})
        assert flood.sent == flood.accounted == 2000
'''
# Fields that legitimately differ between tiers: when, and on which interface, the frame arrived.
TIER_FIELDS = {"ts_ns", "ifindex", "tag"}
FORMS = ("bcc", "libbpf", "object")  # examples/test_port_blocklist.py runs each test on each form


def _same(a, b, what: str) -> None:
    """Two Captures of the same packets: the same frames, verdicts and parsed fields."""
    assert len(a) == len(b) == a.sent == b.sent, what
    some = range(0, len(a), max(1, len(a) // 10_000))  # the million-packet floods: a sample of frames
    assert [a.frame(i) for i in some] == [b.frame(i) for i in some], what
    differ = np.flatnonzero(a.records["verdict"] != b.records["verdict"])
    assert not len(differ), f"{what}: {a[int(differ[0])]!r} but {b[int(differ[0])]!r}"
    for name in a.records.dtype.names:
        if name not in TIER_FIELDS:
            same = (a.records[name] == b.records[name]).reshape(len(a), -1).all(axis=1)
            assert same.all(), f"{what}: field {name} differs at packet #{np.flatnonzero(~same)[0]}"


def _without_tier(nodeid: str) -> str:
    """The test's id without its tier: "t.py::f[bcc-live]" -> "t.py::f[bcc]", "t.py::f[unit]" -> "t.py::f"."""
    name, _, params = nodeid.partition("[")
    kept = [p for p in params.rstrip("]").split("-") if p not in ("live", "unit")] if params else []
    return name + (f"[{'-'.join(kept)}]" if kept else "")


class Recorder:
    """Keeps every Capture each test's inject() returned, by test and tier, and the filters it tested."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], list] = {}
        self.filters: dict[str, set[tuple[str, ...]]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        try:
            return (yield)
        finally:
            args = getattr(item, "funcargs", {})  # a test function's fixtures
            inject = args.get("inject")
            if inject is not None:
                base = _without_tier(item.nodeid)
                self.runs[(base, inject.tier)] = list(inject.captures)
                for hook in ("xdp", "tc"):
                    dut = args.get(hook)
                    if dut is not None:
                        self.filters.setdefault(base, set()).add((dut.program.kind, str(dut.program.name),
                                                                  dut.program.func, hook, dut.direction))


def test_examples_agree_packet_for_packet(pktassert_ready, pytester: pytest.Pytester) -> None:
    copy_examples(pytester.path, leave_out="test_regression")  # compare() runs, not inject(): nothing to agree on
    shutil.copy(VLAN_FILTERS, pytester.path / VLAN_FILTERS.name)
    pytester.makepyfile(test_vlan_corpus=VLAN_CORPUS)
    recorder = Recorder()
    # In-process (the recorder reads live objects); importlib mode, as the examples may be imported already.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--import-mode=importlib", "--pktassert-tier=both",
                                          plugins=[recorder])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] == len(recorder.runs)  # every test that injected, once per tier it ran in
    # Tests that pin their tier (a unit-only sk_buff mark) run once; all others in both.
    tests = {base for base, tier in recorder.runs if tier == "live" and (base, "unit") in recorder.runs}
    single = {base for base, _ in recorder.runs} - tests
    # The DUT's whole stack (nftables, sockets, fates) has no unit tier: those examples run live only.
    whole_stack = {b for b in single if "edge_firewall" in b or "never_reaches_the_app" in b}
    stateful = {b for b in single if "stateful_firewall" in b}  # connections and their states: live only too
    assert len(tests) >= 40 and len(whole_stack) == 5 and len(stateful) >= 8
    assert len(single - whole_stack - stateful) <= 2

    compared, tagged, vlan = 0, 0, 0
    for base in sorted(tests):
        live, unit = recorder.runs[(base, "live")], recorder.runs[(base, "unit")]
        assert len(live) == len(unit), base
        for k, (a, b) in enumerate(zip(live, unit)):
            _same(a, b, f"{base} inject #{k}, live vs unit")
            compared += len(a)
            tagged += int((a.records["vlan_count"] > 0).sum())
            vlan += len(a) if base.startswith("test_vlan_corpus.py") else 0
    assert compared > 2_000_000  # the floods included: every packet of every example test
    # The VLAN corpus: 10 tc filters (4 at ingress and 5 at egress that parse tags, or not, their own way;
    # the example mark guard at ingress), 48 frames and 4,000 flooded each, tagged most of them.
    corpus = {b for b in tests if b.startswith("test_vlan_corpus.py")}
    assert len(corpus) == 10 and vlan == 10 * (48 + 4000)
    assert {f[2] for b in corpus for f in recorder.filters[b]} >= {"dns_by_h_proto", "dns_by_skb_protocol",
                                                                   "dns_through_tags", "mark_guard", "egress_guard"}
    assert {f[4] for b in corpus for f in recorder.filters[b]} == {"ingress", "egress"}
    assert tagged >= 10 * (42 + 4000)
    programs = {f for b in tests for f in recorder.filters.get(b, ())}
    examples = {f for b in tests - corpus for f in recorder.filters.get(b, ())}
    print(f"agreement: {len(tests)} tests, {len(programs)} filters (by form, function and direction), {compared:,} "
          f"packets live vs unit, {tagged:,} of them VLAN-tagged; of those the examples: {len(tests - corpus)} tests, "
          f"{len(examples)} filters, {compared - vlan:,} packets")

    # The libbpf source and the object give what the bcc source gives, packet for packet, in each tier.
    forms = 0
    for base in sorted(b for b in tests if b.endswith("[bcc]")):
        for tier in ("live", "unit"):
            reference = recorder.runs[(base, tier)]
            for form in FORMS[1:]:
                other = recorder.runs[(base.replace("[bcc]", f"[{form}]"), tier)]
                assert len(other) == len(reference), (base, form)
                for k, (a, b) in enumerate(zip(reference, other)):
                    _same(a, b, f"{base} inject #{k} ({tier}), bcc vs {form}")
                    forms += len(a)
    assert forms > 4_000_000  # the port blocklist's tests, its million-packet scan among them
    print(f"agreement: {forms:,} packets bcc vs libbpf and object")
