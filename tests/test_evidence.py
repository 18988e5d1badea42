"""Evidence a person can act on: the pcapng of a failed test read back with tshark (verdicts in the
EPB verdict option, a comment per packet), the offending packet in the message, JUnit properties."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from suite_files import tshark_fields

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SUITE = '''
import pytest
from scapy.layers.inet import IP, TCP, UDP
from pktassert import Fate, Verdict

pytestmark = pytest.mark.xdp("port_blocklist.bpf.c", func="port_blocklist")

def test_telnet_expected_to_pass(xdp, inject):
    inject(IP(dst=xdp.ip) / TCP(dport=22, flags="S"), count=3)
    r = inject(IP(dst=xdp.ip) / TCP(dport=23, flags="S"), count=2)
    assert r.count(Verdict.PASS) == 2

def test_passes(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=22, flags="S")).verdict == Verdict.PASS

def test_flood_with_a_few_offenders(xdp, inject):
    r = inject(IP(dst=xdp.ip) / TCP(flags="S"), count=200_000, vary={"dport": (1, 40000)})
    assert r.count(Verdict.DROP) == 0
'''


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=SUITE)
    shutil.copy(EXAMPLES / "port_blocklist.bpf.c", pytester.path)
    return pytester


def _run(pytester, *args):
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--junitxml=j.xml", *args)
    return res, sorted((pytester.path / "pktassert-evidence").glob("run-*/*.pcapng"))


def test_a_failed_test_leaves_a_pcapng_that_tshark_reads(suite, pktassert_ready):
    res, files = _run(suite, "-k", "telnet or passes")
    res.assert_outcomes(failed=1, passed=1)
    assert [f.name for f in files] == ["test_suite.py_test_telnet_expected_to_pass.pcapng"]  # failed only
    res.stdout.fnmatch_lines(["*pktassert evidence*", f"*5 packets with their verdicts and fates: {files[0]}*"])
    rows = tshark_fields(files[0], "frame.number", "frame.verdict.ebpf_xdp", "tcp.dstport", "frame.comment")
    assert [(r[1], r[2]) for r in rows] == [("2", "22")] * 3 + [("1", "23")] * 2  # XDP_PASS, XDP_DROP
    assert rows[3][3] == ("pktassert: test_suite.py::test_telnet_expected_to_pass: inject() call #2 at "
                          "test_suite.py:9, packet #0; verdict DROP (live tier)")


def test_the_message_shows_the_offending_packet(suite, pktassert_ready):
    res, _ = _run(suite, "-k", "telnet")
    res.stdout.fnmatch_lines([
        "*first packet that was not PASS: packet #0: Ether / IP / TCP 192.0.2.2:ftp_data > 192.0.2.1:telnet S -> DROP",
        "*54 bytes; the inspector parsed: len=54 ethertype=2048 proto=6 ttl=64 sport=20 dport=23 tcp_flags=2 src=*",
        "*0000  02 00 5E 00 53 01 02 00 5E 00 53 02 08 00 45 00*"])


def test_junit_has_the_evidence_as_json(suite, pktassert_ready):
    _run(suite, "-k", "telnet")
    props = {p.get("name"): json.loads(p.get("value")) for p in ET.parse(suite.path / "j.xml").iter("property")}
    assert props["pktassert"] == {"filter": "port_blocklist (port_blocklist.bpf.c)", "hook": "xdp",
                                  "counts": {"DROP": 2, "PASS": 3}}
    ev = props["pktassert_evidence"]
    assert ev["packets"] == 5 and ev["pcapng"].endswith(".pcapng")
    first = ev["failure"][0]
    assert (first["inject_call"], first["packet"], first["length"], first["verdict"]) == (2, 0, 54, "DROP")
    assert first["parsed"]["dport"] == 23 and first["first_bytes"].startswith("02005e005301")


def test_all_and_none(suite, pktassert_ready):
    _, files = _run(suite, "-k", "passes", "--pktassert-evidence=all")
    assert [f.name for f in files] == ["test_suite.py_test_passes.pcapng"]
    shutil.rmtree(suite.path / "pktassert-evidence")
    _, files = _run(suite, "-k", "telnet", "--pktassert-evidence=none")
    assert files == []


def test_a_flood_is_bounded_and_keeps_every_offender(suite, pktassert_ready):
    res, files = _run(suite, "-k", "flood")
    res.assert_outcomes(failed=1)
    rows = tshark_fields(files[0], "frame.verdict.ebpf_xdp", "tcp.dstport", "frame.comment")
    drops = [r for r in rows if r[0] == "1"]
    # port_blocklist drops 23, 135, 445 and 3389: each of the 5 times the sweep hit them, all kept (three
    # of them fall in the first 1,000 anyway)
    assert sorted({int(r[1]) for r in drops}) == [23, 135, 445, 3389] and len(drops) == 20
    assert len(rows) == 1000 + 1000 + 17
    assert "this file holds 2,017 of its 200,000 packets: the first and last 1,000 and 20 offenders" in rows[0][2]


SIZES = "int big_drop(struct xdp_md *ctx) { return ctx->data_end - ctx->data > 553 ? XDP_DROP : XDP_PASS; }"


@pytest.mark.xdp(SIZES, func="big_drop")
def test_a_sweep_failure_says_where_the_verdict_changed(xdp, inject):
    from scapy.layers.inet import IP, UDP

    from pktassert import Verdict
    from pktassert.results.assertion import explain

    r = inject(IP(dst=xdp.ip) / UDP(dport=53), count=300, vary={"size": (400, 699)})
    lines = explain("==", r.count(Verdict.PASS), 300)
    assert lines[2].startswith("first packet that was not PASS: packet #154: ") and lines[2].endswith("-> DROP")
    assert lines[3] == "the verdict changed between #153 (len 553, PASS) and #154 (len 554, DROP)"
    assert lines[4].startswith("  554 bytes; the inspector parsed: len=554 ethertype=2048 proto=17 ttl=64 sport=53")
    nothing = explain("==", r.where(dport=9999).count(Verdict.DROP), 1)
    assert nothing[1] == "where(dport=9999) matched 0 of 300 packets"
