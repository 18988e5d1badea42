"""pktassert.Session: the engine without pytest, composed as the fixtures compose it (pktassert/case.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

import pktassert
from pktassert import BccSource, Fate, LibbpfSource, PktassertError, TcVerdict, Verdict
from pktassert.netns.snapshot import differences, snapshot
from pktassert.observers.printk import instances

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO = EXAMPLES / "session_demo.py"
BLOCKLIST = LibbpfSource(EXAMPLES / "port_blocklist.bpf.c", "port_blocklist")
MARK_GUARD = BccSource(EXAMPLES / "mark_guard.c", "mark_guard")  # made as XDP's: tc= says where it goes
EGRESS_GUARD = LibbpfSource(EXAMPLES / "egress_guard.bpf.c", "egress_guard")
PRINTS = BccSource('int shout(struct xdp_md *ctx) { bpf_trace_printk("seen"); return XDP_PASS; }', "shout")
RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 22 counter drop
  }
}
"""

pytestmark = [pytest.mark.usefixtures("pktassert_ready"),
              pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")]


def _python(code: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_demo_script_checks_two_example_filters_without_pytest():
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 14 and "FAIL" not in done.stdout, done.stdout
    assert "ok   live: telnet dropped: DROP" in lines and "ok   unit: and 8080 passes again: PASS" in lines
    assert lines[-1] == "all as expected"


def test_the_demo_script_exits_1_on_a_wrong_verdict(tmp_path):
    # The same script beside a blocklist that forgot telnet.
    shutil.copy(DEMO, tmp_path)
    shutil.copy(EXAMPLES / "edge_firewall.nft", tmp_path)
    source = (EXAMPLES / "port_blocklist.bpf.c").read_text()
    assert "\tcase 23:" in source
    (tmp_path / "port_blocklist.bpf.c").write_text(source.replace("\tcase 23:", ""))
    done = subprocess.run([sys.executable, str(tmp_path / DEMO.name)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL live: telnet dropped: PASS (expected DROP)" in done.stdout
    assert "FAIL unit: telnet dropped: PASS (expected DROP)" in done.stdout
    assert done.stdout.splitlines()[-1] == "2 wrong: live: telnet dropped, unit: telnet dropped"


def test_importing_the_session_imports_no_pytest():
    done = _python("import sys, pktassert.session; "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_privileges_one_error_names_the_cause_and_the_fix():
    code = ("import pktassert\ntry:\n    pktassert.Session()\nexcept pktassert.PktassertError as e:\n"
            "    print(type(e).__name__, e)\n    raise SystemExit(3)\n")
    done = _python(code, "setpriv", "--inh-caps=-all", "--bounding-set=-all", "--")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("HostLacks pktassert cannot run here: not privileged: missing CAP_NET_ADMIN")
    assert "Fix: run pytest as root" in done.stdout


@pytest.mark.parametrize("tier", ["live", "unit"])
def test_an_xdp_filter_in_either_tier(tier):
    with pktassert.Session(tier=tier) as s, s.dut(xdp=BLOCKLIST) as dut:
        assert dut.tier == tier and dut.xdp is dut.filter and dut.tc is None
        assert dut.ip == "192.0.2.1"
        r = dut.inject([IP(dst=dut.ip) / TCP(dport=23, flags="S"), IP(dst=dut.ip) / UDP(dport=53)])
        assert r.verdicts == [Verdict.DROP, Verdict.PASS]
        assert dut.inject.captures == [r]
        flood = dut.inject(IP(dst=dut.ip) / UDP(dport=445), count=500, vary={"sport": (1, 500)})
        assert flood.count(Verdict.DROP) == 500
        assert dut.counts()[Verdict.DROP] == 501
        assert dut.run(IP(dst=dut.ip) / TCP(dport=3389)).verdict == Verdict.DROP
        if tier == "unit":
            with pytest.raises(PktassertError, match=r"unit tier .* Fix: Session.dut\(\.\.\., tier=\"live\"\)"):
                dut.ns
        else:
            link = dut.ns.ipr.get_links(dut.ifindex)[0]  # the program sits on the DUT's veth, in its namespace
            assert link.get_attr("IFLA_XDP").get_attr("IFLA_XDP_PROG_ID")
            assert r[0].fate == Fate.FILTER_DROPPED  # fates by default, as with the dut fixture


def test_fates_false_is_the_xdp_fixture_alone():
    with pktassert.Session() as s, s.dut(xdp=BLOCKLIST, fates=False) as dut:
        r = dut.inject(IP(dst=dut.ip) / TCP(dport=23, flags="S"))
        assert r.verdict == Verdict.DROP
        with pytest.raises(PktassertError, match="Fix: ask for `dut`"):
            r[0].fate


@pytest.mark.parametrize("tier", ["live", "unit"])
def test_tc_ingress_alone_and_behind_xdp(tier):
    probe = IP(dst="192.0.2.1") / TCP(dport=22, flags="S")
    with pktassert.Session(tier=tier) as s:
        with s.dut(tc=MARK_GUARD, fates=False) as dut:
            assert dut.tc is dut.filter and dut.xdp is None and dut.filter.direction == "ingress"
            assert dut.inject(probe, count=100, vary={"sport": (1, 100)}).count(TcVerdict.SHOT) == 100
            assert dut.inject(IP(dst=dut.ip) / TCP(dport=80, flags="S")).verdict == TcVerdict.OK
        with s.dut(xdp=BLOCKLIST, tc=MARK_GUARD, fates=False) as dut:
            assert dut.tc.front is dut.xdp  # the XDP filter runs first, on the same veth
            r = dut.inject([IP(dst=dut.ip) / TCP(dport=23, flags="S"), probe])
            assert [p.stages for p in r] == [{"xdp": Verdict.DROP, "tc": None}, {"xdp": Verdict.PASS, "tc": TcVerdict.SHOT}]


def test_tc_egress_from_the_dut():
    with pktassert.Session() as s, s.dut(tc=EGRESS_GUARD, direction="egress") as dut:
        dut.map("blocked_dports")[4444] = 1
        out = dut.inject.from_dut(IP(dst=dut.peer.ip) / TCP(dport=4444, flags="S"), count=20, vary={"sport": (1, 20)})
        assert out.count(TcVerdict.SHOT) == 20
        assert dut.inject.from_dut(IP(dst=dut.peer.ip) / TCP(dport=443, flags="S")).verdict == TcVerdict.OK
        assert [p[TCP].dport for p in dut.received_by_peer() if TCP in p] == [443]
        with pytest.raises(PktassertError, match="inject.from_dut"):
            dut.inject(IP(dst=dut.ip) / TCP(dport=80))


def test_a_rule_set_with_fates_and_the_rule_that_decided():
    with pktassert.Session() as s, s.dut(nftables=RULES) as dut:
        dut.listen(tcp=[22, 80])
        r = dut.inject(IP(src="203.0.113.9", dst=dut.ip) / TCP(dport=22, flags="S"), count=10, vary={"sport": (1, 10)})
        assert r.reasons() == {"NETFILTER_DROP": 10}
        assert r[0].rule == "tcp dport 22 counter drop"
        assert dut.inject(IP(dst=dut.ip) / TCP(dport=80, flags="S")).fates() == {Fate.DELIVERED: 1}
        assert dut.nft.counters()["tcp dport 22 counter drop"] == 10
        assert dut.program.func == "pass_through"  # no filter of its own: pktassert's pass-through


def test_a_filter_that_prints_and_its_tracefs_instance_goes_with_the_session():
    def held_here() -> set[str]:  # instances this process reads (xdist's other worker has its own)
        return {name for name, pids in instances().items() if os.getpid() in pids}

    before = held_here()  # this worker's pytest session may have one of its own
    with pktassert.Session() as s, s.dut(xdp=PRINTS, fates=False) as dut:
        assert dut.inject(IP(dst=dut.ip) / UDP(dport=9))[0].prints == ["seen"]
        made = held_here() - before
        assert len(made) == 1
    assert not made & set(instances())


def test_clear_gives_the_next_case_fresh_state_without_loading_again():
    with pktassert.Session() as s, s.dut(xdp=BLOCKLIST, nftables=RULES) as dut:
        loaded, topo = dut.filter.loaded, dut.topology
        dut.map("blocked_ports")[8080] = 1
        assert dut.inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S")).verdict == Verdict.DROP
        dut.inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=3, vary={"sport": (1, 3)})
        dut.nft.nft("add table inet extra")  # the case changes its namespace too
        assert dut.counts()[Verdict.DROP] == 1 and dut.nft.counters()["tcp dport 22 counter drop"] == 3
        dut.clear()
        assert dut.filter.loaded is loaded  # the same loaded program: nothing compiled or loaded again
        assert len(dut.map("blocked_ports")) == 0 and dut.counts()[Verdict.DROP] == 0 and dut.counts()[Verdict.PASS] == 0
        assert dut.inject.captures == []
        assert dut.topology is not topo and "extra" not in dut.nft.nft("list tables")
        assert dut.nft.counters()["tcp dport 22 counter drop"] == 0
        assert dut.inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S")).verdict == Verdict.PASS
        assert topo.dut.ns.fd == topo.peer.ns.fd == -1  # the old namespaces are let go: the kernel removes them


@pytest.mark.parametrize("tier", ["live", "unit"])
def test_clear_resets_globals_in_either_tier(tier):
    with pktassert.Session(tier=tier) as s, s.dut(xdp=pktassert.LibbpfSource(EXAMPLES / "port_blocklist.bpf.c",
                                                                            "port_blocklist", globals=(("extra_port", 9),)),
                                                 fates=False) as dut:
        assert dut.inject(IP(dst=dut.ip) / UDP(dport=9)).verdict == Verdict.DROP  # .rodata set before load, kept
        dut.map("blocked_ports")[53] = 1
        dut.clear()
        assert dut.inject(IP(dst=dut.ip) / UDP(dport=9)).verdict == Verdict.DROP
        assert dut.inject(IP(dst=dut.ip) / UDP(dport=53)).verdict == Verdict.PASS


def test_close_frees_everything_and_leaves_the_root_namespace_as_it_was():
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def one_session() -> pktassert.Dut:
        with pktassert.Session() as s:
            with s.dut(xdp=BLOCKLIST, nftables=RULES) as dut:
                dut.listen(tcp=22)
                dut.inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=100, vary={"sport": (1, 100)})
            dut = s.dut(tc=MARK_GUARD)  # left open: the session closes it
            dut.inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=100, vary={"sport": (1, 100)})
        return dut

    before = snapshot()
    one_session()  # the process's own lasting pieces (the reaper's link) are made once
    fds_before = fds()
    dut = one_session()
    assert fds() == fds_before
    assert differences(before, snapshot()) == []
    with pytest.raises(PktassertError, match="this dut is closed"):
        dut.inject(IP(dst="192.0.2.1") / TCP(dport=22))


@pytest.mark.parametrize("kwargs, message", [
    ({"xdp": "filter.c"}, r"xdp='filter.c'\): a str, not a filter. Fix: xdp=pktassert.LibbpfSource"),
    ({"xdp": LibbpfSource(EXAMPLES / "egress_guard.bpf.c", "egress_guard", hook="tc")}, r"hook='tc'. Fix: give it as tc="),
    ({"xdp": BLOCKLIST, "tier": "both"}, r"tier='both'. Fix: \"live\""),
    ({"xdp": BLOCKLIST, "direction": "egress"}, r"this dut has no tc= filter. Fix: drop direction="),
    ({"tc": MARK_GUARD, "direction": "sideways"}, r"tc filters attach at 'ingress' or 'egress'"),
    ({"tc": LibbpfSource(EXAMPLES / "egress_guard.bpf.c", "egress_guard", hook="tc", direction="egress"),
      "direction": "ingress"}, r"made with direction='egress'. Fix: one of them"),
    ({"nftables": "missing.nft"}, r"no such file .*missing.nft.* Fix: a path"),
    ({"nftables": RULES, "tier": "unit"}, r"a rule set needs the live tier .* Fix: tier=\"live\""),
    ({"nftables": 7}, r"nftables=7\): a int. Fix: a .nft path"),
    ({"fates": False}, r"nothing to test: .*fates=False.* Fix: xdp="),
    ({"tier": "unit"}, r"nothing to test: .*the unit tier has none"),
    ({"xdp": BLOCKLIST, "fates": "yes"}, r"fates='yes'\): True"),
], ids=["not-a-filter", "tc-as-xdp", "tier", "direction-without-tc", "direction", "two-directions", "no-rules-file",
        "rules-in-unit", "rules-type", "nothing", "nothing-unit", "fates-type"])
def test_a_bad_argument_is_one_clear_error_before_anything_is_made(kwargs, message):
    with pktassert.Session() as s:
        with pytest.raises(PktassertError, match=message):
            s.dut(**kwargs)
        assert s._cases == [] and s._closers == []  # refused before anything was made


def test_one_dut_at_a_time_and_nothing_after_close():
    with pktassert.Session(tier="unit") as s:
        first = s.dut(xdp=BLOCKLIST)
        with pytest.raises(PktassertError, match="other dut is still open.* Fix: close\\(\\) the other first"):
            s.dut(xdp=BLOCKLIST)
        first.close()
        assert s.dut(xdp=BLOCKLIST).inject(IP(dst="192.0.2.1") / TCP(dport=23)).verdict == Verdict.DROP
    with pytest.raises(PktassertError, match="this Session is closed"):
        s.dut(xdp=BLOCKLIST)
    with pytest.raises(PktassertError, match=r"Session\(tier=\.\.\.\): tier='x'. Fix: \"live\""):
        pktassert.Session(tier="x")
