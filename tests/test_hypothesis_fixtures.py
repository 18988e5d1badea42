"""@given over pktassert's fixtures: hypothesis runs the examples against the test's DUT (no health-check
refusal), finds a planted bug and shrinks it to the one packet that shows it."""

import pytest

SUITE = '''
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from pktassert import Verdict

# Meant to drop ports 1000..1999; the bound is off by one.
PLANTED = """
int range_guard(struct xdp_md *ctx) {
    void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
    struct ethhdr *eth = d; struct iphdr *ip = (void *)(eth + 1); struct tcphdr *t = (void *)(ip + 1);
    if ((void *)(t + 1) > e || eth->h_proto != htons(0x0800) || ip->protocol != 6) return XDP_PASS;
    __u16 p = ntohs(t->dest);
    return p >= 1000 && p <= 2000 ? XDP_DROP : XDP_PASS;
}
"""

@pytest.mark.xdp(PLANTED, func="range_guard")
@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@settings(max_examples=40, deadline=None)
@given(port=st.integers(1990, 2010))  # around the upper bound: where such bugs live
def test_drops_exactly_the_range(xdp, inject, port):
    verdict = inject(IP(dst=xdp.ip) / TCP(dport=port)).verdict
    assert verdict == (Verdict.DROP if 1000 <= port <= 1999 else Verdict.PASS)
'''


@pytest.mark.usefixtures("pktassert_ready")
def test_a_property_over_our_fixtures_runs_and_shrinks_to_the_boundary(pytester):
    pytester.makepyfile(test_suite=SUITE)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    out = res.stdout.str()
    res.assert_outcomes(failed=1)
    assert "function_scoped_fixture" not in out and "FailedHealthCheck" not in out, out
    assert "port=2000" in out, out  # hypothesis's falsifying example, shrunk to the one port that shows the bug
