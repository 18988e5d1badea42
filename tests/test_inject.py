"""inject(): what it sends, how it accounts for every packet, and state between tests."""

import re
import tracemalloc
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktassert import AccountingError, InjectError, Verdict

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.xdp("int pass_all(struct xdp_md *ctx) { return XDP_PASS; }", func="pass_all")


def test_bytes_are_sent_exactly_as_given(xdp, inject):
    frame = bytes(Ether(src=xdp.peer.mac, dst=xdp.mac) / IP(src="203.0.113.5", dst=xdp.ip, ttl=3) / UDP(dport=9))
    cap = inject([frame, frame])
    assert len(cap) == 2 and cap.records["len"].tolist() == [len(frame)] * 2
    assert cap.where(src="203.0.113.5", ttl=3).count() == 2


def test_defaults_come_from_the_topology(xdp, inject):
    cap = inject(IP(dst=xdp.ip) / TCP())
    assert cap.where(src=xdp.peer.ip).count() == 1


def test_records_follow_send_order_across_calls(xdp, inject):
    first = inject(IP(dst=xdp.ip) / TCP(), count=300, vary={"sport": (1000, 1299)})
    second = inject(IP(dst=xdp.ip) / UDP(), count=300, vary={"dport": (2000, 2299)})
    assert first.records["sport"].tolist() == list(range(1000, 1300))
    assert second.records["dport"].tolist() == list(range(2000, 2300))
    assert second.records["tag"][0] == first.records["tag"][-1] + 1   # tags never repeat within a test
    assert xdp.counts()[Verdict.PASS] == 600


def test_frames_that_never_reach_the_filter_are_reported(xdp, inject):
    # Real loss: with the DUT end down, the veth drops frames before XDP sees them.
    xdp.dut.ns.ipr.link("set", index=xdp.ifindex, state="down")
    # The peer learns it asynchronously; until its carrier is off, its sends are accepted and lost.
    for _ in range(1000):
        if xdp.peer.ns.ipr.get_links(xdp.peer.ifindex)[0].get_attr("IFLA_CARRIER") == 0:
            break
    else:
        pytest.fail("the peer never saw the DUT end go down")
    with pytest.raises(AccountingError, match=r"3 of 3 injected packets have no verdict \(first: packet #0\)\. "
                                              r"3 were dropped by the DUT's veth before the filter \("):
        inject(IP(dst=xdp.ip) / TCP(), count=3)


@pytest.mark.parametrize("bad, message", [
    ([], "empty list"),
    (None, "item 0 is a NoneType"),
    ([IP() / TCP(), 42], "item 1 is a int"),
])
def test_not_packets(xdp, inject, bad, message):
    with pytest.raises(InjectError, match=message):
        inject(bad)


def test_count_must_be_positive(xdp, inject):
    with pytest.raises(InjectError, match="count=0"):
        inject(IP(dst=xdp.ip) / TCP(), count=0)


def test_filter_state_is_fresh_for_each_test(pktassert_ready, pytester):
    # Two tests spend the same per-source SYN budget; each must start with all of it.
    pytester.makepyfile(test_state=f"""
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict
pytestmark = pytest.mark.xdp({str(ROOT / "examples" / "syn_guard.c")!r}, func="syn_guard")
@pytest.mark.parametrize("run", [1, 2, 3])
def test_budget(xdp, inject, run):
    r = inject(IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S"), count=100, vary={{"sport": (1024, 1123)}})
    assert r.count(Verdict.PASS) == 64
    assert len(xdp.maps["syn_budget"]) == 1
""")
    # In both tiers: state persists within a test (the budget runs out) and is fresh for the next.
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pktassert-tier=both").assert_outcomes(passed=6)


@pytest.mark.xdp("int pass_all(struct xdp_md *ctx) { return XDP_PASS; }", func="pass_all",
                 cflags=("-DPKTASSERT_RING_PAGES=1",))   # a one-page ring: room for ~46 records
def test_ring_buffer_overflow_is_reported_with_counts(xdp, inject):
    with pytest.raises(AccountingError) as err:
        inject(IP(dst=xdp.ip) / TCP(), count=63)   # few enough for the socket path and its ring buffer
    missing, lost = map(int, re.search(r"(\d+) of 63 injected packets have no verdict .*?\. (\d+) reached the filter "
                                       r"but their records were lost \(ring buffer full\)\. Without", str(err.value)).groups())
    assert missing == lost > 10
    assert xdp.counts()[Verdict.PASS] == 63 and xdp.tally().lost == lost   # counters stay exact


@pytest.mark.xdp(str(ROOT / "examples" / "syn_guard.c"), func="syn_guard")
@pytest.mark.parametrize("tier", ["live"], indirect=True)
def test_large_flood_keeps_a_sample_and_exact_counts_in_bounded_memory(xdp, inject):
    flood = IP(dst=xdp.ip) / TCP(dport=80, flags="S")
    vary = {"src": "198.51.100.0/24", "sport": (1024, 65535)}
    peaks = []
    for count in (500_000, 2_000_000):
        tracemalloc.start()
        r = inject(flood, count=count, vary=vary, keep=50_000)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert r.sent == r.accounted == count and r.step == -(-count // 50_000) and len(r) == count // r.step
        assert r.count() == count and r.count(Verdict.DROP) + r.count(Verdict.PASS) == count   # exact, from counters
        assert r.where(TCP).sampled and not r.sampled
        assert list(r.index[:3]) == [0, r.step, 2 * r.step] and r.where(TCP).count() == len(r)
    # Four times the packets, about the same memory: chunks are built and dropped, records sampled.
    assert peaks[1] < 1.5 * peaks[0], peaks
    assert peaks[1] < 120 * 2**20


@pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)
def test_flood_of_varied_sizes(xdp, inject):
    r = inject(IP(dst=xdp.ip) / UDP(dport=9), count=2000, vary={"size": (60, 1514), "sport": (1, 2000)}, seed=1)
    lens = r.records["len"]
    assert r.sent == r.accounted == 2000 and r.count(Verdict.PASS) == 2000
    assert lens.min() >= 60 and lens.max() <= 1514 and len(set(lens.tolist())) > 500
    assert [len(r.frame(i)) for i in range(0, 2000, 400)] == lens[::400].tolist()
    assert 1 <= r.records["sport"].min() and r.records["sport"].max() <= 2000   # seed= draws every field
