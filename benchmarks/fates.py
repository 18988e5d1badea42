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

from pktassert.bpf.fate_tracker import FateTracker
from pktassert.bpf.receiver import Receiver
from pktassert.bpf.sender import Sender
from pktassert.netns import Topology
from report import show, timed_floods  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, UDP

from pktassert import Fate
from pktassert.collect import Collector
from pktassert.dut import XdpUnderTest
from pktassert.inject import MTU, Injector
from pktassert.nft_ruleset import RuleSet
from pktassert.plugin import PASS_THROUGH
from pktassert.record import const

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


def live(kind: str, n: int, tracker: FateTracker | None, sender: Sender, receiver: Receiver,
         floods: int = 3) -> dict[str, object]:
    loaded = PASS_THROUGH.load()
    with Topology(mtu=MTU + const("TRAILER_LEN")) as topo:
        dut = XdpUnderTest(loaded, Collector(loaded), topo, receiver)
        if kind == "nftables":
            RuleSet(topo.dut.ns, RULES)
        if tracker is not None:
            dut.track_fates(tracker)
        else:
            topo.route_via_peer()  # as track_fates does: the same stack either way
        inject = Injector(dut, lambda: sender)
        template = IP(dst=dut.ip) / UDP(dport=9)

        def check(capture: Any) -> None:
            if tracker is not None:
                assert capture.reasons() == {REASON[kind]: n}, capture.reasons()
                assert capture.count(Fate.UNKNOWN) == 0

        figures, _ = timed_floods(lambda: inject(template, count=n, vary=VARY), n, check, floods)
        inject.close()
        dut.close()
    loaded.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    sender, receiver, tracker = Sender(), Receiver(), FateTracker()
    out: dict[str, object] = {}
    try:
        for kind in ("nftables", "stack"):
            out[f"{kind}_fates_off"] = live(kind, args.packets, None, sender, receiver)
            out[f"{kind}_fates_on"] = live(kind, args.packets, tracker, sender, receiver)
    finally:
        sender.close()
        receiver.close()
        tracker.close()
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
