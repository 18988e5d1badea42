"""Parallel runs: -n 0, -n 2 and -n 4 give the same results, and two runs started at once don't disturb
each other (each has its own namespaces; nothing is named globally)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from suite_files import copy_examples

from pktassert.build import build_cache

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# One failure on purpose, so "the same results" covers failures too.
FAILING = """
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict
pytestmark = pytest.mark.xdp("port_blocklist.c", func="port_blocklist")
def test_expected_wrong(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23)).verdict == Verdict.PASS
"""


def _suite(path: Path) -> None:
    copy_examples(path, leave_out=("test_icmp", "test_regression"))  # compare() runs: not what is checked here
    (path / "test_wrong.py").write_text(FAILING)


def _command(*args: str) -> list[str]:
    # The million-packet examples are left out: five runs of them would say nothing more here.
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
            "-k", "not million and not full_port and not replay", *args]


def _results(out: str) -> dict[str, str]:
    return dict((m.group(2), m.group(1)) for m in re.finditer(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", out, re.MULTILINE))


def _compiles(cache: Path) -> list[str]:
    return [c["what"] for c in build_cache.compiles(cache)]


def test_same_results_with_0_2_and_4_workers_and_two_runs_at_once(pytester, pktassert_ready, monkeypatch):
    _suite(pytester.path)
    cache = pytester.path / "cache"
    monkeypatch.setenv(build_cache.ENV, str(cache))  # the runs' own build cache: what they compile is counted
    runs = {}
    for n in ("0", "2", "4"):
        done = subprocess.run(_command("-n", n), cwd=pytester.path, capture_output=True, text=True)
        runs[n] = (done.returncode, _results(done.stdout))
    assert runs["0"][0] == pytest.ExitCode.TESTS_FAILED
    results = list(runs["0"][1].values())
    assert len(results) >= 20 and results.count("FAILED") == 1 and results.count("PASSED") == len(results) - 1
    assert runs["2"] == runs["0"] and runs["4"] == runs["0"]
    # The libbpf example compiled once for all three runs (the object form is the Makefile's).
    assert _compiles(cache).count("compile port_blocklist.bpf.c") == 1

    # Two runs at once, each with two workers, on an empty cache: still one compile per filter.
    shutil.rmtree(cache)
    both = [subprocess.Popen(_command("-n", "2"), cwd=pytester.path, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in both]
    assert [(p.returncode, _results(out)) for p, out in zip(both, outs)] == [runs["0"]] * 2
    assert _compiles(cache).count("compile port_blocklist.bpf.c") == 1
