"""Per-test cost: bcc compile once, then per test in the live tier topology + attach + inject + teardown,
and in the unit tier map reset + inject (BPF_PROG_TEST_RUN), side by side.

Run as root: .venv/bin/python benchmarks/overhead.py [--json]. Prints medians over repeated runs;
compare the parts with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

from pktassert.bpf.program import Program
from pktassert.netns import Topology
from report import show  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP

from pktassert.collect import Collector
from pktassert.dut import XdpUnderTest
from pktassert.inject import MTU, Injector
from pktassert.record import const

SYN_GUARD = Program(Path(__file__).resolve().parent.parent / "examples" / "syn_guard.c", "syn_guard")


def timed(fn, n: int) -> float:
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tests", type=int, default=50)
    args = ap.parse_args()

    import bcc  # noqa: F401  (imported before timing: the import is paid once per process)

    loaded = []
    compile_s = timed(lambda: loaded.append(SYN_GUARD.load()), 3)
    prog = loaded[-1]
    collector = Collector(prog)
    mtu = MTU + const("TRAILER_LEN")

    def topology_only() -> None:
        Topology(mtu=mtu).close()

    def one_test(tier: str) -> None:
        with Topology(mtu=mtu) if tier == "live" else contextlib.nullcontext() as topo:
            xdp = XdpUnderTest(prog, collector, topo)
            inject = Injector(xdp)
            assert inject(IP(dst=xdp.ip) / TCP(dport=80, flags="A")).verdict == 2
            inject.close()

    topo_s = timed(topology_only, args.tests)
    test_s = timed(lambda: one_test("live"), args.tests)
    unit_s = timed(lambda: one_test("unit"), args.tests)
    for p in loaded:
        p.close()
    out = {"bcc_compile_load_s": round(compile_s, 3), "topology_s": round(topo_s, 4),
           "per_test_overhead_s": round(test_s, 4), "per_test_overhead_unit_s": round(unit_s, 5),
           "live_over_unit": round(test_s / unit_s, 1), "tests": args.tests}
    show(out, args.json)


if __name__ == "__main__":
    main()
