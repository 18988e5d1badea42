"""The JUnit files of a suite's shards (pytest-split's --splits/--group, one CI job each) merged into
one, as one unsharded run writes it: one test suite, every test case in shard order, the counts summed,
pktassert's run properties kept (each distinct one once: the kernel of each shard), and the shards named.
Also the verdicts per filter over the merged run, from each test's ``pktassert`` property."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pktassert.errors import PktassertError
from pktassert.reports.test_report import VerdictSummary

COUNTS = ("tests", "errors", "failures", "skipped")


def _suites(path: Path) -> list[ET.Element]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise PktassertError(f"{path}: not a JUnit XML file pytest wrote ({e}). Fix: the --junitxml file of a "
                             f"shard's run.") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise PktassertError(f"{path}: no <testsuite> in it. Fix: the --junitxml file of a shard's run.")
    return suites


def merge(shards: Sequence[Path]) -> tuple[ET.ElementTree, VerdictSummary]:
    """One tree of every shard's test cases; the verdicts per filter over them."""
    merged = ET.Element("testsuite", name="pytest")
    properties = ET.SubElement(merged, "properties")
    seen: set[tuple[str | None, str | None]] = set()
    totals = dict.fromkeys(COUNTS, 0)
    seconds = 0.0
    summary = VerdictSummary()
    for path in shards:
        for suite in _suites(path):
            for key in COUNTS:
                totals[key] += int(suite.get(key, 0))
            seconds = max(seconds, float(suite.get("time", 0)))  # shards run side by side: the longest
            for prop in suite.iterfind("properties/property"):
                if (prop.get("name"), prop.get("value")) not in seen:
                    seen.add((prop.get("name"), prop.get("value")))
                    properties.append(prop)
            for case in suite.iterfind("testcase"):
                merged.append(case)
                for prop in case.iterfind("properties/property"):
                    summary.add(prop.get("name", ""), prop.get("value"))
    ET.SubElement(properties, "property", name="pktassert_shards", value=",".join(p.name for p in shards))
    for key, n in totals.items():
        merged.set(key, str(n))
    merged.set("time", f"{seconds:.3f}")
    root = ET.Element("testsuites")
    root.append(merged)
    return ET.ElementTree(root), summary


def write(shards: Sequence[Path], out: Path) -> VerdictSummary:
    tree, summary = merge(shards)
    ET.indent(tree)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return summary
