"""--pktassert-summary: each filter's verdicts over the run, in its own hook's verdict names."""

import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SUITE = '''
import pytest
from scapy.layers.inet import IP, TCP, UDP

@pytest.mark.xdp("port_blocklist.bpf.c", func="port_blocklist")
def test_xdp(xdp, inject):
    inject(IP(dst=xdp.ip) / TCP(dport=23, flags="S"), count=3)
    inject(IP(dst=xdp.ip) / TCP(dport=22, flags="S"), count=2)

@pytest.mark.tc("mark_guard.c", func="mark_guard")
def test_tc(tc, inject):
    inject(IP(dst=tc.ip) / UDP(dport=8443), count=4)
    inject(IP(dst=tc.ip) / UDP(dport=53), count=5)
'''


def test_xdp_and_tc_filters_each_in_their_own_verdicts(pytester, pktassert_ready):
    pytester.makepyfile(test_suite=SUITE)
    for f in ("port_blocklist.bpf.c", "mark_guard.c"):
        shutil.copy(EXAMPLES / f, pytester.path)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--pktassert-summary", "-n", "2")
    res.assert_outcomes(passed=2)
    res.stdout.re_match_lines([r"XDP filter +tests +ABORTED +DROP +PASS +TX +REDIRECT",
                               r"port_blocklist \(port_blocklist.bpf.c\) +1 +0 +3 +2 +0 +0",
                               r"tc filter +tests +UNSPEC +OK +RECLASSIFY +SHOT +PIPE +STOLEN +QUEUED +REPEAT +REDIRECT +TRAP",
                               r"mark_guard \(mark_guard.c\) +1 +0 +5 +0 +4 +0 +0 +0 +0 +0 +0"])
