"""tc filters beside XDP, side by side in one run: live injected packets/s through a tc ingress
classifier (every packet accounted, behind pktassert's pass-through XDP stage so the traffic engine
delivers) and through an XDP filter, the median of three floods after one to warm up; unit-tier
distinct packets/s through each against the bare test-run loop on the same frames.

Run as root: .venv/bin/python benchmarks/tc.py [--json] [--packets N] [--unit-packets N]
Goals (issue 11): tc live >= 1 Mpps, tc unit >= 0.9x raw. Compare the figures with each other.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from report import show, timed_floods  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from unit import raw_loop

from pktassert import BccSource, LibbpfSource, Session, TcVerdict, Verdict
from pktassert.frames.flood import build
from pktassert.frames.wire import Wire
from pktassert.transports.unit import UnitPath

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
XDP = LibbpfSource(EXAMPLES / "port_blocklist.bpf.c", "port_blocklist")
TC = BccSource(EXAMPLES / "mark_guard.c", "mark_guard", hook="tc")
VARY = {"src": "198.51.100.0/24", "sport": (1024, 65535)}


def subject(kind: str) -> dict[str, BccSource | LibbpfSource]:
    """Session.dut()'s arguments for ``kind``: a tc ingress filter alone (the session puts its tag mover
    in front, for the traffic engine), or the XDP filter."""
    return {"tc": TC} if kind == "tc" else {"xdp": XDP}


def live(session: Session, kind: str, n: int, floods: int = 3) -> dict[str, object]:
    with session.dut(**subject(kind), fates=False) as dut:  # the filter alone, as the tc and xdp fixtures have it
        template = IP(dst=dut.ip) / TCP(dport=22 if kind == "tc" else 23, flags="S")
        want = TcVerdict.SHOT if kind == "tc" else Verdict.DROP

        def check(capture: Any) -> None:
            assert capture.count(want) == n, capture

        figures, _ = timed_floods(lambda: dut.inject(template, count=n, vary=VARY), n, check, floods)
    return figures


def unit(session: Session, kind: str, n: int, rounds: int = 5) -> dict[str, object]:
    with session.dut(**subject(kind), tier="unit") as dut:
        loaded, inject = dut.filter.loaded, dut.inject
        template = IP(dst=dut.ip) / TCP(dport=22 if kind == "tc" else 23, flags="S")
        rows = build(Ether(src=dut.peer.mac, dst=dut.mac) / template, n, VARY)
        wire = Wire.build(rows, UnitPath.magic, 1)
        ours, raw = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            capture = inject(template, count=n, vary=VARY)
            ours.append(time.perf_counter() - t)
            assert capture.accounted == n
            raw.append(raw_loop(loaded.fd, wire))  # the bare baseline: the same loaded program, no pktassert
    return {"distinct_pps": round(n / min(ours)), "raw_pps": round(n / min(raw)),
            "distinct_over_raw": round(min(raw) / min(ours), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--unit-packets", type=int, default=200_000)
    args = ap.parse_args()
    out: dict[str, object] = {}
    with Session() as session:  # the engine, receiver and tag mover: made once, on first use
        for kind in ("tc", "xdp"):
            out[f"{kind}_live"] = live(session, kind, args.packets)
            out[f"{kind}_unit"] = unit(session, kind, args.unit_packets)
    tc_live, xdp_live = out["tc_live"], out["xdp_live"]
    assert isinstance(tc_live, dict) and isinstance(xdp_live, dict)
    out["tc_live_over_xdp_live"] = round(int(tc_live["pps"]) / int(xdp_live["pps"]), 2)
    tc_unit = out["tc_unit"]
    assert isinstance(tc_unit, dict)
    out["goal_met"] = bool(int(tc_live["pps"]) >= 1_000_000 and float(tc_unit["distinct_over_raw"]) >= 0.9)
    show(out, args.json)


if __name__ == "__main__":
    main()
