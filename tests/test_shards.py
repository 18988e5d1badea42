"""A suite split across CI jobs (pytest-split: --splits N --group G, xdist inside each shard) merges into
the report one unsharded run writes: the same test cases with the same outcomes, the same totals, the
same verdicts per filter; each shard's evidence in a folder named by its shard and kernel (issue 25)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from pktassert.reports import junit_merge
from pktassert.reports.test_report import RUN_ENV

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TESTS = """
import pytest
from scapy.layers.inet import IP, TCP, UDP
from pktassert import Verdict
pytestmark = pytest.mark.xdp({source!r}, func="port_blocklist")

@pytest.mark.parametrize("port", [22, 80, 443, 8080])
def test_open_{n}(xdp, inject, port):
    assert inject(IP(dst=xdp.ip) / TCP(dport=port, flags="S")).verdict == Verdict.PASS

@pytest.mark.parametrize("port", [23, 3389])
def test_blocked_{n}(xdp, inject, port):
    r = inject(IP(dst=xdp.ip) / TCP(dport=port, flags="S"), count=3, vary={{"sport": (1000, 1002)}})
    assert r.verdicts == [Verdict.DROP] * 3
"""
WRONG = """
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict
@pytest.mark.xdp({source!r}, func="port_blocklist")
def test_expected_wrong(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23)).verdict == Verdict.PASS
"""


def _pytest(where: Path, *args: str) -> subprocess.CompletedProcess:
    # Each run as a CI job starts it: not inside this run's evidence folder (which xdist workers inherit).
    env = {k: v for k, v in os.environ.items() if k != RUN_ENV}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
                           "--pktassert-evidence=all", *args], cwd=where, capture_output=True, text=True, env=env)


def _cases(path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for case in ET.parse(path).iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        out[(case.get("classname", ""), case.get("name", ""))] = outcome
    return out


def test_two_shards_merge_into_the_unsharded_report(tmp_path, pktassert_ready):
    source = str(EXAMPLES / "port_blocklist.bpf.c")
    for n in range(3):
        (tmp_path / f"test_ports_{n}.py").write_text(TESTS.format(source=source, n=n))
    (tmp_path / "test_wrong.py").write_text(WRONG.format(source=source))
    whole = _pytest(tmp_path, "--store-durations", "--junitxml=whole.xml")
    assert whole.returncode == 1, whole.stdout[-2000:]  # the one wrong test
    assert (tmp_path / ".test_durations").exists()
    for group in ("1", "2"):
        shard = _pytest(tmp_path, "--splits", "2", "--group", group, "-n", "2", f"--junitxml=shard{group}.xml")
        assert shard.returncode in (0, 1), shard.stdout[-2000:]
    merged = subprocess.run([sys.executable, "-m", "pktassert.cli", "merge", "merged.xml", "shard1.xml", "shard2.xml"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stdout + merged.stderr

    one, both = _cases(tmp_path / "whole.xml"), _cases(tmp_path / "merged.xml")
    assert len(one) == 19 and list(one.values()).count("failure") == 1
    assert both == one
    shard_cases = [set(_cases(tmp_path / f"shard{g}.xml")) for g in ("1", "2")]
    assert all(shard_cases) and not shard_cases[0] & shard_cases[1]  # each test in exactly one shard
    suite = next(ET.parse(tmp_path / "merged.xml").iter("testsuite"))
    assert (suite.get("tests"), suite.get("failures")) == ("19", "1")
    # The verdicts per filter over the shards: the unsharded run's, line for line.
    assert junit_merge.merge([tmp_path / "whole.xml"])[1].table() == junit_merge.merge(
        [tmp_path / "shard1.xml", tmp_path / "shard2.xml"])[1].table()
    assert "port_blocklist" in merged.stdout and "DROP" in merged.stdout
    kernel = os.uname().release
    folders = sorted(p.name for p in (tmp_path / "pktassert-evidence").iterdir())
    assert [f for f in folders if f"-{kernel}-shard1of2-" in f] and [f for f in folders if f"-{kernel}-shard2of2-" in f], \
        folders


def test_a_file_that_is_not_junit_is_one_clear_error(tmp_path):
    (tmp_path / "x.xml").write_text("not xml")
    done = subprocess.run([sys.executable, "-m", "pktassert.cli", "merge", str(tmp_path / "m.xml"), str(tmp_path / "x.xml")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "x.xml: not a JUnit XML file pytest wrote" in done.stderr and "Fix:" in done.stderr
