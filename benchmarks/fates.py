"""Fate tracking's cost, side by side in one run: live injected packets/s through the DUT's whole
stack (pktassert's pass-through XDP stage, then the kernel) with each packet's fate tracked and
without, every packet accounted; the median of three floods after one to warm up. Two floods:
into an nftables rule set that drops them (the firewall test), and to a UDP port no socket has
(the stack drops each with NO_SOCKET, after trying to answer it with an ICMP error).

Run as root: .venv/bin/python benchmarks/fates.py [--json] [--packets N]
Goal (issue 12): >= 0.5 Mpps with fates (the nftables flood). Compare the figures with each other.
"""

from __future__ import annotations

import argparse
from typing import Any

from report import show, timed_floods  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, UDP

from pktassert import Fate, Session
from pktassert.case import PASS_THROUGH

VARY = {"src": "198.51.100.0/24", "sport": (1024, 65535)}


RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy accept;
    udp dport 9 drop
  }
}
"""
REASON = {"nftables": "NETFILTER_DROP", "stack": "NO_SOCKET"}


def live(session: Session, kind: str, n: int, fates: bool, floods: int = 3) -> dict[str, object]:
    # pktassert's pass-through XDP stage, named: the stack is what is measured (a dut with no filter, rule
    # set or fates would be refused as testing nothing).
    with session.dut(xdp=PASS_THROUGH, nftables=RULES if kind == "nftables" else None, fates=fates) as dut:
        if not fates:
            dut.topology.route_via_peer()  # as fate tracking does: the same stack either way
        template = IP(dst=dut.ip) / UDP(dport=9)

        def check(capture: Any) -> None:
            if fates:
                assert capture.reasons() == {REASON[kind]: n}, capture.reasons()
                assert capture.count(Fate.UNKNOWN) == 0

        figures, _ = timed_floods(lambda: dut.inject(template, count=n, vary=VARY), n, check, floods)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    out: dict[str, object] = {}
    with Session() as session:  # the engine, receiver, fate tracker and pass-through: made once, on first use
        for kind in ("nftables", "stack"):
            out[f"{kind}_fates_off"] = live(session, kind, args.packets, False)
            out[f"{kind}_fates_on"] = live(session, kind, args.packets, True)
    for kind in ("nftables", "stack"):
        on, off = out[f"{kind}_fates_on"], out[f"{kind}_fates_off"]
        assert isinstance(on, dict) and isinstance(off, dict)
        out[f"{kind}_on_over_off"] = round(int(on["pps"]) / int(off["pps"]), 2)
    on = out["nftables_fates_on"]
    assert isinstance(on, dict)
    out["goal_met"] = bool(int(on["pps"]) >= 500_000)
    show(out, args.json)


if __name__ == "__main__":
    main()
