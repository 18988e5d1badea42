"""Every way the README offers to choose the filter (marker, conftest override, parametrized override,
class-level override) selects the same filter for `xdp`, `tc` and `dut`; a contradiction is an error."""

import pytest

DROP_ALL = 'int drop_all(struct xdp_md *ctx) { return XDP_DROP; }'
SHOT_ALL = 'int shot_all(struct __sk_buff *skb) { return TC_ACT_SHOT; }'
HEADER = ("import pytest\nfrom scapy.layers.inet import IP, UDP\nfrom pktassert import Fate, Program, TcVerdict, "
          "Verdict, BccSource\n")
OVERRIDE = f"""
import pytest
from pktassert import Program
@pytest.fixture
def xdp_program():
    return Program({DROP_ALL!r}, func="drop_all")
"""


def run(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=HEADER + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


def test_dut_tests_the_overridden_xdp_filter(pktassert_ready, pytester):
    pytester.makeconftest(OVERRIDE)
    res = run(pytester, """
def test_through_dut(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53))
    assert r.verdict == Verdict.DROP and r[0].fate == Fate.FILTER_DROPPED, (dut, r[0].fate)

def test_through_xdp(xdp, inject):
    assert inject(IP(dst=xdp.ip) / UDP(dport=53)).verdict == Verdict.DROP
""")
    res.assert_outcomes(passed=2)


def test_dut_tests_a_parametrized_and_a_class_level_override(pktassert_ready, pytester):
    res = run(pytester, f"""
PASS_ALL = "int pass_all(struct xdp_md *ctx) {{ return XDP_PASS; }}"

@pytest.fixture(params=["drop", "pass"])
def xdp_program(request):
    if request.param == "drop":
        return Program({DROP_ALL!r}, func="drop_all")
    return Program(PASS_ALL, func="pass_all")

def test_each(dut, inject, xdp_program):
    want = Verdict.DROP if xdp_program.func == "drop_all" else Verdict.PASS
    assert inject(IP(dst=dut.ip) / UDP(dport=53)).verdict == want

class TestClassLevel:
    @pytest.fixture
    def xdp_program(self):
        return Program({DROP_ALL!r}, func="drop_all")

    def test_it(self, dut, inject):
        assert inject(IP(dst=dut.ip) / UDP(dport=53)).verdict == Verdict.DROP
""")
    res.assert_outcomes(passed=3)


def test_dut_tests_the_overridden_tc_filter(pktassert_ready, pytester):
    pytester.makeconftest(f"""
import pytest
from pktassert import BccSource
@pytest.fixture
def tc_program():
    return BccSource({SHOT_ALL!r}, func="shot_all", hook="tc")
""")
    res = run(pytester, """
def test_through_dut(dut, inject):
    r = inject(IP(dst=dut.ip) / UDP(dport=53))
    assert r.verdict == TcVerdict.SHOT and r[0].fate == Fate.FILTER_DROPPED, (dut, r[0].fate)
""")
    res.assert_outcomes(passed=1)


def test_a_marker_and_an_override_that_disagree_are_an_error_naming_both(pktassert_ready, pytester):
    pytester.makeconftest(OVERRIDE)
    res = run(pytester, """
PASS_ALL = "int pass_all(struct xdp_md *ctx) { return XDP_PASS; }"

@pytest.mark.xdp(PASS_ALL, func="pass_all")
def test_it(xdp, inject):
    inject(IP(dst=xdp.ip) / UDP(dport=53))
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*@pytest.mark.xdp chooses pass_all*the xdp_program fixture*drop_all*Fix:*"])
