"""What pktassert adds to a test's report: the pcapng of its packets (named in the report and in
JUnit's properties, as JSON) and, with --pktassert-summary, the verdicts per filter over the run."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pktassert.device.inject import Injector
from pktassert.hooks.table import HOOKS
from pktassert.reports import evidence
from pktassert.results.offender import describe

RUN_ENV = "PKTASSERT_RUN"  # the run's evidence folder name, shared with xdist workers


def run_folder(config: pytest.Config) -> str:
    """``run-<date>-<time>-<kernel release>[-shard<G>of<N>]-<pid>``: which kernel and, under pytest-split
    (--splits N --group G), which shard, so the evidence of a matrix of CI jobs can sit side by side."""
    splits, group = config.getoption("splits", default=None), config.getoption("group", default=None)
    shard = f"-shard{group}of{splits}" if splits and group else ""
    return time.strftime("run-%Y%m%d-%H%M%S-") + f"{os.uname().release}{shard}-{os.getpid()}"


def evidence_for(item: pytest.Item, report: pytest.TestReport) -> None:
    """The test's packets as pcapng, named in its report and its JUnit properties."""
    mode = item.config.getoption("pktassert_evidence")
    injector = getattr(item, "funcargs", {}).get("inject")
    if mode == "none" or (mode == "failed" and not report.failed) or not isinstance(injector, Injector):
        return
    if not injector.captures:
        return
    folder = Path(item.config.rootpath, item.config.getoption("pktassert_evidence_dir"), os.environ[RUN_ENV])
    path = folder / (re.sub(r"[^\w.-]+", "_", item.nodeid).strip("_") + ".pcapng")
    try:
        n = evidence.write(path, injector.captures, item.nodeid)
    except OSError as e:
        report.sections.append(("pktassert evidence", f"no pcapng written: {e}. Fix: --pktassert-evidence-dir on a "
                                                      f"writable disk (a read-only checkout, say)."))
        return
    notes = "".join(f"\n  {note}" for note in evidence.reason_notes(injector.captures))
    report.sections.append(("pktassert evidence", f"{n} packets with their verdicts and fates: {path}\n"
                                                  f"(open in Wireshark, or: tshark -r {path} -T fields -e frame.number "
                                                  f"-e frame.verdict -e frame.comment)"
                                                  + (f"\nthe kernel's drop reasons:{notes}" if notes else "")))
    facts = {"pcapng": str(path), "packets": n, "failure": _failure_evidence(injector),
             "drop_reasons": evidence.reason_facts(injector.captures)}
    # JUnit XML takes the properties of the teardown report, which copies the item's.
    item.user_properties.append(("pktassert_evidence", json.dumps(facts)))


def _failure_evidence(injector: Injector) -> list[dict[str, Any]]:
    """The packets a failed assertion named (first few), as JSON-ready facts."""
    out: list[dict[str, Any]] = []
    for call, cap in enumerate(injector.captures, 1):
        if cap.offenders is None:
            continue
        for pos in cap.positions(cap.offenders[:5]).tolist():
            out.append({"inject_call": call, "origin": cap.origin, **describe(cap, pos)})
    return out


class VerdictSummary:
    """Verdicts per filter over the run, from the reports (so it works under pytest-xdist too, and over
    JUnit files merged from shards: pktassert/reports/junit_merge.py)."""

    def __init__(self) -> None:
        self.filters: dict[str, dict[str, Any]] = {}

    def add(self, key: str, text: object) -> None:
        """One test's property (``key``, its JSON text): counted if it is pktassert's filter summary."""
        if key == "pktassert" and isinstance(text, str):
            value = json.loads(text)  # JSON: what JUnit XML shows, not a Python repr
            entry = self.filters.setdefault(value["filter"], {"tests": 0, "counts": {},
                                                              "hook": value.get("hook", "xdp")})
            entry["tests"] += 1
            for name, n in value["counts"].items():
                entry["counts"][name] = entry["counts"].get(name, 0) + n

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for key, text in report.user_properties:
            self.add(key, text)

    def table(self) -> list[str]:
        """A table per hook, in its own verdict names: a filter, its tests, its packets per verdict."""
        lines = []
        for hook, spec in HOOKS.items():
            filters = {name: e for name, e in self.filters.items() if e["hook"] == hook}
            if not filters:
                continue
            names = [v.name for v in spec.actions]
            title = f"{spec.title} filter"
            width = max(len(title), *(len(name) for name in filters))
            lines.append(f"{title:<{width}} {'tests':>5} " + " ".join(f"{n:>10}" for n in names))
            for name, entry in sorted(filters.items()):
                lines.append(f"{name:<{width}} {entry['tests']:>5} "
                             + " ".join(f"{entry['counts'].get(n, 0):>10}" for n in names))
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.filters:
            return
        terminalreporter.section("pktassert: verdicts per filter")
        for line in self.table():
            terminalreporter.write_line(line)
