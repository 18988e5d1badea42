"""Verdict truth: a frame the filter never saw never gets a verdict, every record belongs to the frame
it is read for, counts are of injected frames only, and odd return codes and tail calls are reported
as the kernel treats them. Each test here was written against a wrong answer main gave."""

import re
import socket
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import AccountingError, Verdict

ROOT = Path(__file__).resolve().parent.parent
PASS_ALL = "int pass_all(struct xdp_md *ctx) { return XDP_PASS; }"
LIVE = pytest.mark.parametrize("tier", ["live"], indirect=True)
UNIT = pytest.mark.parametrize("tier", ["unit"], indirect=True)
BOTH = pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)

pytestmark = pytest.mark.xdp(PASS_ALL, func="pass_all")


# Two tests in one session on one loaded program: the second one's flood loses its long frames to the
# DUT's lowered MTU; their slots still hold the first test's records for the same send positions.
STALE_SLOTS = f"""
import pytest
from scapy.layers.inet import IP, UDP
from pktassert import AccountingError, Verdict
pytestmark = pytest.mark.xdp({PASS_ALL!r}, func="pass_all")
FLOOD = dict(count=200, vary={{"size": [200, 1200], "sport": (1, 200)}})

def test_a_full_flood(xdp, inject):
    assert inject(IP(dst=xdp.ip) / UDP(dport=9), **FLOOD).count(Verdict.PASS) == 200

def test_b_long_frames_dropped_by_the_veth(xdp, inject):
    xdp.dut.ns.ipr.link("set", index=xdp.ifindex, mtu=1000)
    with pytest.raises(AccountingError) as err:
        inject(IP(dst=xdp.ip) / UDP(dport=9), **FLOOD)
    print("ERROR:", err.value)
"""


def test_frames_the_veth_drops_never_get_an_earlier_tests_verdict(pytester, pktassert_ready):
    pytester.makepyfile(test_stale=STALE_SLOTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-p", "no:randomly")
    res.assert_outcomes(passed=2)
    message = re.search(r"ERROR: (.*)", res.stdout.str()).group(1)
    assert message.startswith("100 of 200 injected packets have no verdict (first: packet #1)"), message
    assert "100 are longer than the DUT link's MTU (1000) lets through (frames up to 1010 bytes" in message, message
    assert "packets #1, #3, #5," in message, message


@LIVE
def test_counts_are_of_injected_frames_only(xdp, inject):
    # The DUT listens on port 80: its SYN-ACKs make the peer's stack answer with RSTs, frames that
    # pktassert did not send, which reach the filter meanwhile.
    server = xdp.dut.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((xdp.ip, 80))
    server.listen(4096)
    try:
        r = inject(IP(dst=xdp.ip) / TCP(dport=80, flags="S"), count=20_000, keep=1000,
                   vary={"sport": (1024, 65535)})
        for _ in range(20_000):  # bounded: the peer's RSTs arrive within milliseconds
            if xdp.stray_counts()[Verdict.PASS] > 0:
                break
            time.sleep(0.0005)
        assert r.step == 20 and r.count(Verdict.PASS) == r.count() == 20_000
        assert xdp.counts()[Verdict.PASS] == 20_000
        assert xdp.stray_counts()[Verdict.PASS] > 0          # counted apart, as what they are
    finally:
        server.close()


def _returning(value):
    return pytest.param(value, marks=pytest.mark.xdp(f"int odd(struct xdp_md *ctx) {{ return {value}; }}", func="odd"))


@BOTH
@pytest.mark.parametrize("ret", [_returning(7), _returning(-1), _returning(1000)])
def test_return_codes_that_are_not_actions_count_as_aborted(xdp, inject, ret):
    r = inject(IP(dst=xdp.ip) / UDP(dport=9), count=3)
    assert r.count(Verdict.ABORTED) == 3 and r.counts() == {"ABORTED": 3}
    assert [o.ret for o in r] == [ret] * 3                     # the raw value stays visible
    assert "not an XDP action" in repr(r[0])
    assert xdp.counts()[Verdict.ABORTED] == 3


@LIVE
@pytest.mark.xdp("int odd(struct xdp_md *ctx) { return 7; }", func="odd")
def test_aborted_return_codes_are_dropped_by_the_kernel(xdp, inject):
    # The kernel really drops what the verdict says: the DUT's socket gets nothing.
    sock = xdp.dut.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((xdp.ip, 9))
    sock.setblocking(False)
    try:
        assert inject(IP(dst=xdp.ip) / UDP(dport=9) / b"x").verdict == Verdict.ABORTED
        with pytest.raises(BlockingIOError):
            sock.recv(100)
    finally:
        sock.close()


TAIL = r"""
#include <linux/udp.h>
BPF_PROG_ARRAY(jmp, 4);
int dropper(struct xdp_md *ctx) { return XDP_DROP; }
int entry(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
		return XDP_DROP;          /* not TCP: dropped here */
	jmp.call(ctx, 0);             /* TCP: the program in slot 0 decides, if there is one */
	return XDP_PASS;
}
"""

TAIL_TESTS = f"""
import pytest
from scapy.layers.inet import IP, TCP, UDP
from pktassert import AccountingError, Verdict
pytestmark = [pytest.mark.xdp({TAIL!r}, func="entry"), pytest.mark.parametrize("tier", ["unit"], indirect=True)]

def test_a_udp_dropped_by_the_entry(xdp, inject):
    assert inject(IP(dst=xdp.ip) / UDP(sport=1111, dport=1111)).verdict == Verdict.DROP

def test_b_tcp_dropped_by_the_tail_called_program(xdp, inject):
    xdp.map("jmp")[0] = "dropper"
    r = inject(IP(dst=xdp.ip) / TCP(sport=2222, dport=2222))
    assert r.verdict == Verdict.DROP
    assert (r.records["sport"][0], r.records["dport"][0]) == (2222, 2222)   # this frame's fields
"""


def test_tail_called_verdict_is_exact_in_the_unit_tier(pytester, pktassert_ready):
    pytester.makepyfile(test_tail=TAIL_TESTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    res.assert_outcomes(passed=2)


@pytest.mark.xdp(TAIL, func="entry")
@BOTH
def test_tail_calls_wired_by_function_name(xdp, inject):
    xdp.map("jmp")[0] = "dropper"          # a function of the same source, loaded for the slot
    if xdp.tier == "unit":
        r = inject([IP(dst=xdp.ip) / TCP(dport=80), IP(dst=xdp.ip) / UDP(dport=53)])
        assert r.verdicts == [Verdict.DROP, Verdict.DROP]
        assert r[0].tail_call and not r[1].tail_call
        return
    with pytest.raises(AccountingError,
                       match=r"1 of 1 .*left the filter through a tail call.*does not observe .*live tier.*unit tier"):
        inject(IP(dst=xdp.ip) / TCP(dport=80))


@pytest.mark.xdp(TAIL, func="entry")
@BOTH
def test_tail_call_into_an_empty_slot_falls_through(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=80)).verdict == Verdict.PASS


OUR_NAMES = """
BPF_HASH(pa_seen, __u32, __u64, 16);     /* a user's map that happens to start with pa_ */
#define zero 0                           /* user macros must not reach our inspector */
#define PA_FILTER pass_all
#define ret 0                            /* names of the inspector's locals */
#define tag r
int pass_all(struct xdp_md *ctx) { return XDP_PASS; }
int real(struct xdp_md *ctx)
{
	__u32 k = zero;
	__u64 one = 1;
	pa_seen.update(&k, &one);
	return XDP_DROP;
}
"""

NAMES_TESTS = f"""
import pytest
from scapy.layers.inet import IP, UDP
from pktassert import Verdict
pytestmark = pytest.mark.xdp({OUR_NAMES!r}, func="real")

@pytest.mark.parametrize("n", [1, 2])
def test_user_names_are_the_users(xdp, inject, n):
    assert "pa_seen" in xdp.maps and len(xdp.maps["pa_seen"]) == 0      # fresh, and not hidden
    assert inject(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.DROP
    assert len(xdp.maps["pa_seen"]) == 1
"""


def test_users_names_and_macros_do_not_touch_the_inspector(pytester, pktassert_ready):
    pytester.makepyfile(test_names=NAMES_TESTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pktassert-tier=both")
    res.assert_outcomes(passed=4)


@pytest.mark.xdp("int pktassert_mine(struct xdp_md *ctx) { return XDP_PASS; }", func="pktassert_mine")
def test_reserved_names_are_refused_with_the_list(request):
    from pktassert import ProgramError

    with pytest.raises(ProgramError, match=r"reserved.*pktassert_"):
        request.getfixturevalue("xdp")


@LIVE
@pytest.mark.xdp("int fresh_first(struct xdp_md *ctx) { return XDP_PASS; /* loaded for this test only */ }",
                 func="fresh_first")
def test_the_first_frame_of_a_fresh_program_is_never_an_empty_slot(xdp, inject):
    # Slot 0 of a program never used holds zeros: it must not pass for packet #0's record.
    xdp.dut.ns.ipr.link("set", index=xdp.ifindex, mtu=1000)
    frames = [IP(dst=xdp.ip) / UDP(dport=9) / (b"x" * 1100)] + [IP(dst=xdp.ip) / UDP(dport=9)] * 63
    with pytest.raises(AccountingError, match=r"^1 of 64 injected packets have no verdict \(first: packet #0\)"):
        inject(frames)


@LIVE
def test_a_list_paced_by_rate(xdp, inject):
    start = time.monotonic_ns()
    r = inject([IP(dst=xdp.ip) / UDP(dport=p) for p in (1, 2, 3)], rate=100)
    assert r.records["dport"].tolist() == [1, 2, 3] and r.count(Verdict.PASS) == 3
    # Paced, never early: the third is due 20 ms after the first (the inspector's clock is CLOCK_MONOTONIC).
    assert (int(r.records["ts_ns"][-1]) - start) / 1e9 >= 2 / 100
