"""A million-packet comparison beside one flood of the same size, side by side in one run: compare() of two
releases of examples/port_blocklist.bpf.c (both loaded, every packet through each, answers diffed) against
one inject() flood through one of them, each with every packet's record kept; the median of three.

Run as root: .venv/bin/python benchmarks/compare.py [--json] [--packets N] [--tier unit|live]
Goal (issue 22): the comparison takes at most about twice one flood (compare_over_flood <= ~2).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from report import show  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP

from pktassert import DUT_IP, LibbpfSource, Session, Traffic, compare

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NEW = EXAMPLES / "port_blocklist.bpf.c"
OLD = EXAMPLES / "versions" / "port_blocklist.v1.bpf.c"
VARY = {"dport": (0, 65535), "src": "198.51.100.0/24"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--tier", choices=("unit", "live"), default="unit")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n, template = args.packets, IP(dst=DUT_IP) / TCP()
    traffic = Traffic.flood(template, n, VARY)
    floods, compares = [], []
    with Session(tier=args.tier) as session:
        # Both filters loaded once first (as a suite would have them cached): load time is not what is timed.
        for path in (NEW, OLD):
            with session.dut(xdp=LibbpfSource(path, "port_blocklist"), fates=False) as dut:
                dut.inject(template)
        for _ in range(args.rounds):
            with session.dut(xdp=LibbpfSource(NEW, "port_blocklist"), fates=args.tier == "live") as dut:
                t = time.perf_counter()
                one = dut.inject(template, count=n, vary=VARY, keep=n)
                floods.append(time.perf_counter() - t)
                assert one.accounted == n
            t = time.perf_counter()
            diff = compare(OLD, NEW, traffic, func="port_blocklist", tier=args.tier, session=session)
            compares.append(time.perf_counter() - t)
            assert diff.only(dport=3389), diff
    flood_s, compare_s = statistics.median(floods), statistics.median(compares)
    out = {"packets": n, "tier": args.tier, "flood_s": round(flood_s, 3), "compare_s": round(compare_s, 3),
           "flood_pps": round(n / flood_s), "compared_pps": round(n / compare_s),
           "differing": len(diff), "compare_over_flood": round(compare_s / flood_s, 2)}
    out["goal_met"] = bool(compare_s / flood_s <= 2.2)  # "about twice"
    show(out, args.json)


if __name__ == "__main__":
    main()
