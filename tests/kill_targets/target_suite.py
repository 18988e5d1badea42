"""Every phase a run goes through, in a few tests: run by the fault matrix (tests/test_kills.py), killed
at one phase, then again to pass. In order: a libbpf source that prints (compile, cache write, link,
load, attach, printk, evidence write, teardown), a bcc filter flooded by the traffic engine, the object
a Makefile builds, and a rule set with each packet's fate (the fate tracker, nft load, rule tracing)."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import Fate, Verdict

HERE = Path(__file__).resolve().parent
OBJECT = HERE.parent.parent / "examples" / "build" / "port_blocklist.bpf.o"  # `make objects`
GUARD = "int size_guard(struct xdp_md *ctx) { return ctx->data_end - ctx->data > 100 ? XDP_DROP : XDP_PASS; }"
RULES = "table inet t { chain c { type filter hook input priority 0; policy accept; tcp dport 23 drop; }; }"


@pytest.mark.xdp("prints.bpf.c", func="chatty")
def test_libbpf_source_that_prints(xdp, inject):
    r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=3, vary={"size": (99, 101)})
    assert [p.prints for p in r] == [["saw 99 bytes"], ["saw 100 bytes"], ["saw 101 bytes"]]
    assert r.verdicts == [Verdict.PASS, Verdict.PASS, Verdict.DROP]


@pytest.mark.xdp(GUARD, func="size_guard")
def test_bcc_filter_flooded(xdp, inject):
    r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=5000, vary={"size": (60, 159)})
    assert r.accounted == 5000 and r.count(Verdict.DROP) == 2950


@pytest.mark.xdp(str(OBJECT), func="port_blocklist")
def test_object(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23, flags="S")).verdict == Verdict.DROP


@pytest.mark.nftables(RULES)
def test_rule_set_with_fates(dut, inject):
    r = inject(IP(dst=dut.ip) / TCP(dport=23, flags="S"), count=3)
    assert r.fates() == {Fate.NETFILTER_DROPPED: 3}
    assert r[0].rule == "tcp dport 23 drop"
