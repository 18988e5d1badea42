"""A frags-aware libbpf filter (SEC("xdp.frags")) sees frames longer than a page."""

import shutil

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Verdict

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")


FRAGS = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("xdp.frags")
int big_frames(struct xdp_md *ctx)
{
	return bpf_xdp_get_buff_len(ctx) > 4000 ? XDP_DROP : XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.xdp(FRAGS, func="big_frames")
def test_frags_aware_entry_sees_frames_over_a_page(xdp):
    """SEC("xdp.frags"): the inspector that calls it is loaded frags-aware too, so a 6,000-byte frame
    reaches the filter whole (a test run, whose frame spans fragments; the veth's MTU is 1500)."""
    assert xdp.run(IP(dst=xdp.ip) / UDP(dport=9) / (b"x" * 6000)).verdict == Verdict.DROP
    assert xdp.run(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.PASS

