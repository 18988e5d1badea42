"""Unit tier throughput: inject() over BPF_PROG_TEST_RUN against a bare ctypes loop, same run, same packets.

Run as root: .venv/bin/python benchmarks/unit.py [--json] [--packets N] [--rounds R]

- distinct_pps: verdicts for N distinct packets through the public API (inject(count=, vary=) in the
  unit tier), frame building and the Capture included.
- raw_pps: a bare loop over libbpf's bpf_prog_test_run_opts through ctypes on the same frames (already
  built, trailer included, so the program does the same work), keeping only each verdict: no output
  frames, no records, no checks.
Rounds alternate between the two; each figure is from its best round (as timeit does: on a shared
machine the slower rounds measure the neighbours), with the medians printed too. Compare the two
figures with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time
from pathlib import Path

import numpy as np
from report import show  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktassert import BccSource, Session, Verdict
from pktassert.frames.flood import build
from pktassert.frames.wire import Wire
from pktassert.kernel.test_run import _Opts
from pktassert.transports.unit import UnitPath

SYN_GUARD = BccSource(Path(__file__).resolve().parent.parent / "examples" / "syn_guard.c", "syn_guard")
VARY = {"src": "198.51.100.0/24", "sport": (1024, 65535), "seq": (0, 2**32 - 1)}


def raw_loop(fd: int, wire: Wire) -> float:
    """What a user would write without us: one options struct, reused, one call per frame."""
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    run = lib.bpf_prog_test_run_opts
    run.argtypes, run.restype = [ctypes.c_int, ctypes.POINTER(_Opts)], ctypes.c_int
    opts = _Opts(sz=ctypes.sizeof(_Opts))  # no data_out: the bare minimum, the verdict only
    ref = ctypes.byref(opts)
    base, offsets, lengths = wire.data.ctypes.data, wire.offsets.tolist(), wire.lengths.tolist()
    retvals = [0] * len(offsets)
    t = time.perf_counter()
    for i in range(len(offsets)):
        opts.data_in, opts.data_size_in = base + offsets[i], lengths[i]
        if run(fd, ref):
            raise OSError(ctypes.get_errno(), "bpf_prog_test_run_opts")
        retvals[i] = opts.retval
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    n = args.packets

    with Session(tier="unit") as session, session.dut(xdp=SYN_GUARD) as dut:  # no topology: the unit tier
        xdp, inject = dut.xdp, dut.inject
        assert xdp is not None
        template = IP(dst=xdp.ip) / TCP(dport=80, flags="S")

        rows = build(Ether(inject_frames := bytes(Ether(src=xdp.peer.mac, dst=xdp.mac) / template)), n, VARY)
        distinct = len(np.unique(rows, axis=0))
        wire = Wire.build(rows, UnitPath.magic, 0)

        ours, raw, drops = [], [], 0
        for _ in range(args.rounds):
            t = time.perf_counter()
            capture = inject(template, count=n, vary=VARY)
            drops = capture.count(Verdict.DROP)
            ours.append(time.perf_counter() - t)
            assert len(capture) == n and capture.accounted == n
            raw.append(raw_loop(xdp.loaded.fd, wire))  # the bare baseline: the same loaded program, no pktassert

    distinct_pps, raw_pps = n / min(ours), n / min(raw)
    out = {"packets": n, "distinct_packets": distinct, "rounds": args.rounds, "frame_bytes": len(inject_frames),
           "distinct_pps": round(distinct_pps), "raw_pps": round(raw_pps),
           "distinct_over_raw": round(distinct_pps / raw_pps, 3),
           "median_distinct_pps": round(n / statistics.median(ours)), "median_raw_pps": round(n / statistics.median(raw)),
           "drops_last_round": int(drops),
           "goal_met": bool(distinct_pps >= 0.8 * raw_pps and distinct_pps >= 400_000 and distinct >= 100_000)}
    show(out, args.json)


if __name__ == "__main__":
    main()
