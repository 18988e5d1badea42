"""Two example filters tested with pktassert.Session alone, without pytest: the port blocklist (XDP,
libbpf source) in both tiers, then the edge firewall's rule set (edge_firewall.nft) through the DUT's
whole stack, with each packet's fate. One line per check; exits 1 if any verdict or fate is wrong.

Run as root: .venv/bin/python examples/session_demo.py
(Not named test_*.py: pytest does not collect it; tests/test_session.py runs it.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP

import pktassert
from pktassert import Fate, Verdict

HERE = Path(__file__).resolve().parent
BLOCKLIST = pktassert.LibbpfSource(HERE / "port_blocklist.bpf.c", "port_blocklist")
wrong: list[str] = []


def check(what: str, got: object, expected: object) -> None:
    ok = got == expected
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {got}" + ("" if ok else f" (expected {expected})"))
    if not ok:
        wrong.append(what)


def blocklist(session: pktassert.Session, tier: str) -> None:
    with session.dut(xdp=BLOCKLIST, tier=tier) as dut:
        def verdict(port: int) -> str:
            return dut.inject(IP(dst=dut.ip) / TCP(dport=port, flags="S")).verdicts[0].name

        check(f"{tier}: telnet dropped", verdict(23), "DROP")
        check(f"{tier}: https passes", verdict(443), "PASS")
        dut.map("blocked_ports")[8080] = 1  # blocked at run time, as the filter's loader would
        flood = dut.inject(IP(dst=dut.ip) / TCP(dport=8080, flags="S"), count=1000, vary={"sport": (1024, 65535)})
        check(f"{tier}: 1000 SYNs to 8080 once it is blocked, dropped", int(flood.count(Verdict.DROP)), 1000)
        dut.clear()  # the next case: the map as at load, the counters at zero
        check(f"{tier}: after clear(), the blocklist map is empty", len(dut.map("blocked_ports")), 0)
        check(f"{tier}: and 8080 passes again", verdict(8080), "PASS")


def firewall(session: pktassert.Session) -> None:
    with session.dut(nftables=HERE / "edge_firewall.nft") as dut:  # no filter: the rule set and the stack
        dut.listen(tcp=[22, 443])  # real sockets in the DUT namespace
        outside = dut.inject(IP(src="203.0.113.9", dst=dut.ip) / TCP(dport=22, flags="S"), count=50,
                             vary={"src": "203.0.113.0/24"})
        check("ssh from outside: the kernel's drop reasons", outside.reasons(), {"NETFILTER_DROP": 50})
        check("ssh from outside: the rule that dropped it", outside[0].rule, "tcp dport 22 ip saddr != 198.51.100.0/24 drop")
        admin = dut.inject(IP(src="198.51.100.7", dst=dut.ip) / TCP(dport=22, flags="S"))
        check("ssh from the admin network: delivered to the socket", admin[0].fate, Fate.DELIVERED)
        https = dut.inject(IP(dst=dut.ip) / TCP(dport=443, flags="S"), count=3, vary={"sport": (40000, 40002)})
        check("https: delivered", https.fates(), {Fate.DELIVERED: 3})


def main() -> int:
    with pktassert.Session() as session:
        for tier in ("live", "unit"):
            blocklist(session, tier)
        firewall(session)
    print(f"{len(wrong)} wrong: {', '.join(wrong)}" if wrong else "all as expected")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
