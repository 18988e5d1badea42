"""The filter's own bpf_printk lines, per packet, in both tiers, only this test's (xdist included)."""

import pytest
from scapy.layers.inet import IP, UDP
from suite_files import tshark_fields

from pktassert import Verdict

PRINTS = 'int chatty(struct xdp_md *ctx) { bpf_trace_printk("len %d\\n", ctx->data_end - ctx->data); return XDP_PASS; }'
LIBBPF = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int chatty(struct xdp_md *ctx)
{
    int len = ctx->data_end - ctx->data;
    bpf_printk("saw %d bytes", len);
    if (len > 100)
        bpf_printk("too long: dropped");
    return len > 100 ? XDP_DROP : XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.xdp(PRINTS, func="chatty")
def test_each_line_goes_to_the_packet_that_printed_it(xdp, inject, tier):
    r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=40, vary={"size": (60, 99)})
    assert [p.prints for p in r] == [[f"len {n}"] for n in range(60, 100)]
    assert r.prints[:2] == [(0, "len 60"), (1, "len 61")]


@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.xdp(LIBBPF, func="chatty")
def test_libbpf_filter_lines_and_the_failure_message(xdp, inject, tier, tmp_path):
    from pktassert.reports import evidence
    from pktassert.results.assertion import explain

    r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=3, vary={"size": (99, 101)})
    assert [p.prints for p in r] == [["saw 99 bytes"], ["saw 100 bytes"], ["saw 101 bytes", "too long: dropped"]]
    lines = explain("==", r.count(Verdict.PASS), 3)
    assert "  the filter printed for it: saw 101 bytes | too long: dropped" in lines
    evidence.write(tmp_path / "e.pcapng", [r], "t")
    third = [c for (c,) in tshark_fields(tmp_path / "e.pcapng", "frame.comment") if ", packet #2;" in c]
    assert third[0].endswith("; printed: saw 101 bytes | too long: dropped")


@pytest.mark.xdp("../examples/port_blocklist.bpf.c", func="port_blocklist")
def test_a_filter_that_does_not_print_gets_no_marks(xdp, inject):
    assert not xdp.loaded.prints and xdp.printk is None
    assert inject(IP(dst=xdp.ip) / UDP(dport=53)).prints == []


SUITE = '''
import pytest
from scapy.layers.inet import IP, UDP

PRINTS = 'int chatty(struct xdp_md *ctx) { bpf_trace_printk("len %d\\\\n", ctx->data_end - ctx->data); return XDP_PASS; }'

@pytest.mark.xdp(PRINTS, func="chatty")
@pytest.mark.parametrize("base", [60, 200, 400, 800])
def test_own_lines_only(xdp, inject, base):
    for _ in range(20):
        r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=100, vary={"size": (base, base + 99)})
        assert [p.prints for p in r] == [[f"len {n}"] for n in range(base, base + 100)]
'''


def test_under_xdist_each_test_has_only_its_own_lines(pytester, pktassert_ready):
    pytester.makepyfile(test_suite=SUITE)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-n", "2")
    res.assert_outcomes(passed=4)
