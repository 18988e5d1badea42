"""A failed test's comparisons as pcapng: the differing packets with both answers, beside its other evidence."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pktassert.compare.run import MADE
from pktassert.reports.test_report import RUN_ENV


def clear() -> None:
    """A test starts with no comparison of its own."""
    MADE.clear()


def evidence_for(item: pytest.Item, report: pytest.TestReport) -> None:
    """Each comparison with differences that a failed test made, as pcapng, named in its report."""
    diffs = [d for d in MADE if d]
    MADE.clear()
    mode = item.config.getoption("pktassert_evidence")
    if mode == "none" or (mode == "failed" and not report.failed) or not diffs:
        return
    folder = Path(item.config.rootpath, item.config.getoption("pktassert_evidence_dir"), os.environ[RUN_ENV])
    stem = re.sub(r"[^\w.-]+", "_", item.nodeid).strip("_")
    for i, diff in enumerate(diffs, 1):
        path = folder / f"{stem}.compare{i}.pcapng"
        try:
            n = diff.write_pcapng(path)
        except OSError as e:
            report.sections.append(("pktassert compare", f"no pcapng written: {e}. Fix: --pktassert-evidence-dir on a "
                                                         f"writable disk."))
            return
        report.sections.append(("pktassert compare", f"{diff}\n\n{n} differing packets with A's and B's answers: {path}\n"
                                                     f"(tshark -r {path} -T fields -e frame.number -e frame.comment)"))
        item.user_properties.append(("pktassert_compare", json.dumps({"pcapng": str(path), **diff.to_json()})))
