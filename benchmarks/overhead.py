"""What a filter costs before its first packet and what each live test costs around it, by phase, for
this tree and for a base commit (main before the work being judged), side by side in one run.

Run as root: .venv/bin/python benchmarks/overhead.py [--base REF] [--tests N] [--rounds R] [--json]

Each side runs in its own process (its pktassert on PYTHONPATH, the same example filters); rounds
alternate base, this tree, base, ... and each figure is the median over rounds. Printed per side:

- per live test, by kind of filter (bcc, libbpf, object): the wall time of one test (a dut of the
  filter, one packet injected, teardown), and each phase's share on the test's path ("path") and on
  pktassert's background thread ("ahead"): namespace creation, the veth, address/neighbour setup,
  lookups, the topology as handed to the test (a wait, when made ahead), attaches, map reset, inject,
  stopping the links, teardown; and the CPU the kernel's worker threads spent per test meanwhile (where
  it frees a closed namespace, asynchronously: cleanup_net runs on a workqueue);
- the unit tier's per-test cost; bcc compile+load; libbpf cold compile+link+load; cached loads;
  the wall time of editing a filter and rerunning one test (bcc, libbpf);
- the goals of issue 24 as ratios of this tree to the base where a ratio makes sense.

Timings here are noisy (2 shared cores): compare the two sides, not with other machines.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from report import show  # benchmarks/report.py (scripts run from this folder)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = "5b34e6a"  # main before issue 24 (fast inner loop)
GOALS = {  # issue 24: what this tree's figure should be, as a ratio or an absolute
    "per live test (s)": 0.010,
    "bcc edit -> rerun one test (s)": 3.0,
    "libbpf edit -> rerun one test (s)": 1.0,
    "libbpf cold compile+link+load (s)": 0.4,
}


def base_tree(ref: str, into: Path) -> Path:
    """The base commit's files (git archive: no worktree entry left in .git)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into)  # our own commit's files (Python 3.11.2 has no extraction filter)
    return into


def measure_side(tree: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(HERE / "overhead_side.py"), "--tests", str(args.tests)]
    if args.no_edit:
        cmd.append("--no-edit")
    done = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def medians(runs: list[dict]) -> dict:
    """Per key, the median over rounds (nested dicts key by key)."""
    out: dict = {}
    for key, first in runs[0].items():
        if isinstance(first, dict):
            out[key] = medians([r[key] for r in runs])
        elif isinstance(first, (int, float)):
            out[key] = round(statistics.median(r[key] for r in runs), 5)
        else:
            out[key] = first
    return out


def compare(base: dict, this: dict) -> dict:
    """This tree over the base, for every figure both have (lower is better for all of them)."""
    ratios = {}
    for key, value in this.items():
        other = base.get(key)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)) and other:
            ratios[key] = round(value / other, 3)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=BASE, help="the commit to compare with (default: main before issue 24)")
    ap.add_argument("--tests", type=int, default=40, help="live tests per kind per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-edit", action="store_true", help="skip the edit -> rerun timings (the slow part)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = base_tree(args.base, Path(tmp) / "base")
        runs: dict[str, list[dict]] = {"base": [], "this": []}
        for _ in range(args.rounds):
            runs["base"].append(measure_side(base, args))
            runs["this"].append(measure_side(ROOT, args))
    sides = {side: medians(r) for side, r in runs.items()}
    flat = {side: {f"{k}: {p}" if isinstance(v, dict) else k: (x if isinstance(v, dict) else v)
                   for k, v in figures.items() for p, x in (v.items() if isinstance(v, dict) else [(None, v)])}
            for side, figures in sides.items()}
    this_totals = {k: v for k, v in flat["this"].items() if k.endswith("per live test (s)")}
    out = {"base": args.base, "rounds": args.rounds, "tests_per_round": args.tests,
           "base_figures": flat["base"], "this_figures": flat["this"],
           "this_over_base": compare(flat["base"], flat["this"]),
           "goals": {k: {"goal": g, **{name: v for name, v in this_totals.items() if name.endswith(k)},
                         **{kk: flat["this"][kk] for kk in flat["this"] if kk == k}} for k, g in GOALS.items()}}
    if args.json:
        show(out, True)
        return
    for side in ("base_figures", "this_figures"):
        print(f"== {side.replace('_figures', '')} ({args.base if side.startswith('base') else 'this tree'})")
        for key, value in out[side].items():
            ratio = out["this_over_base"].get(key)
            print(f"  {key:>62}: {value}" + (f"   (this/base {ratio})" if side == "this_figures" and ratio else ""))
    print("== goals (issue 24)")
    for key, goal in GOALS.items():
        mine = {k: v for k, v in flat["this"].items() if k.endswith(key)}
        print(f"  {key:>40}: goal {goal}; this tree {mine}")


if __name__ == "__main__":
    main()
