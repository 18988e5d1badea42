"""What knowing each packet's rule and connection state costs, side by side in one run: live injected
packets/s of a flood through a stateful nftables rule set (conntrack on; the DUT's whole stack, each
packet's fate tracked either way) with every packet's deciding rule and ct state recorded, and without;
the median of three floods after one to warm up, every packet accounted.

The flood: TCP SYNs to a port the rule set does not open, each of a distinct source (address, port),
so conntrack makes a new entry for every one, the rule set looks at its state (``ct state
established,related accept``, ``ct state invalid drop``) and the chain's policy drops it: each packet
should say rule "policy drop" in "inet fw input" and state NEW.

Run as root: .venv/bin/python benchmarks/stateful.py [--json] [--packets N]
Goal (issue 23): with rules and ct states >= 0.5x the rate without. Also printed: whether every packet
of the flood had a rule and a ct state (with them on), and that none had a rule with them off.
"""

from __future__ import annotations

import argparse
from typing import Any

from report import show, timed_floods  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP

from pktassert import Ct, Fate, Session
from pktassert.case import PASS_THROUGH

RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    tcp dport 22 ct state new accept
  }
}
"""
VARY = {"src": "198.51.100.0/24", "sport": (1024, 65535)}  # each packet a connection of its own
POLICY = ("inet fw input", "policy drop")


def flood(dut: Any, n: int, rules: bool) -> Any:
    dut.tracing = rules  # off: no packet's rule (connection states are kept either way)
    return dut.inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S"), count=n, vary=VARY)


def per_packet(capture: Any, n: int) -> dict[str, Any]:
    """Whether every packet of the flood has its rule and its ct state, as the rule set saw them."""
    out: dict[str, Any] = {}
    counts = capture.rule_counts()
    out["every_packet_had_a_rule"] = counts == {POLICY: n}
    if counts != {POLICY: n}:
        out["rules"] = {" / ".join(k): v for k, v in counts.items()}
    states = capture.ct_states()
    out["every_packet_had_a_ct_state"] = states == {Ct.NEW: n}
    if states != {Ct.NEW: n}:
        out["ct_states"] = {str(k): v for k, v in states.items()}
    return out


def live(session: Session, n: int, rules: bool, floods: int = 3) -> tuple[dict[str, Any], Any]:
    with session.dut(xdp=PASS_THROUGH, nftables=RULES) as dut:
        def check(capture: Any) -> None:
            assert capture.fates() == {Fate.NETFILTER_DROPPED: n}, capture.fates()
            assert capture.reasons() == {"NETFILTER_DROP": n}, capture.reasons()

        figures, last = timed_floods(lambda: flood(dut, n, rules), n, check, floods)
        if rules:
            figures.update(per_packet(last, n))
        else:
            decided = getattr(last, "fate_rules", None)
            figures["a_packet_had_a_rule"] = decided is not None and any(r is not None for r in decided)
    return figures, last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    out: dict[str, object] = {"packets": args.packets}
    with Session() as session:  # the engine, receiver, fate tracker and pass-through: made once, on first use
        out["rules_off"], _ = live(session, args.packets, False)
        out["rules_on"], _ = live(session, args.packets, True)
    on, off = out["rules_on"], out["rules_off"]
    assert isinstance(on, dict) and isinstance(off, dict)
    out["on_over_off"] = round(int(on["pps"]) / int(off["pps"]), 2)
    out["goal_met"] = bool(out["on_over_off"] >= 0.5 and on.get("every_packet_had_a_rule") is True
                           and on.get("every_packet_had_a_ct_state") is True)
    show(out, args.json)


if __name__ == "__main__":
    main()
