"""Payload floods, side by side in one run: live injected packets/s through a keyword filter
(examples/keyword_block.bpf.c) with one fixed payload, with payloads varied per packet from a list,
and with a payload byte swept at an offset; every packet accounted; and the time where(payload=...)
takes to search the flood's payloads. The median of three floods after one to warm up. Signature
floods (all dropped by the filter) measure pktassert; a benign pair shows the stack's own cost.

Run as root: .venv/bin/python benchmarks/payload.py [--json] [--packets N]
Goal (issue 13): payload floods of >= 1 M packets keep >= 1 Mpps. Compare the figures with each other.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from report import show, timed_floods  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, UDP

from pktassert import LibbpfSource, Session, Verdict

FILTER = LibbpfSource(Path(__file__).resolve().parent.parent / "examples" / "keyword_block.bpf.c", "keyword_block")
REQUEST = b"RRQ /etc/passwd\x00octet\x00"
SIGNATURES = [REQUEST, b"GET /etc/passwd HTTP/1.1\r\n", b"POST /cgi-bin/x?f=/etc/passwd HTTP/1.0\r\n",
              b"RRQ ../../etc/passwd\x00netascii\x00"]
BENIGN = b"RRQ /boot/vmlinuz\x00octet\x00"
# name: (template payload, vary): signature floods (every packet carries the keyword: all dropped at
# XDP, so the figures are the payload machinery's), and a benign pair (the kernel's stack takes
# every packet the filter passes: its own cost, the same with and without varied payloads).
FLOODS = {
    "fixed_signature": (REQUEST, {"sport": (1024, 65535)}),
    "signature_list": (REQUEST, {"sport": (1024, 65535), "payload": SIGNATURES}),
    "signature_byte_sweep": (REQUEST, {"sport": (1024, 65535), "payload[0]": (0x20, 0x7E)}),
    "fixed_benign": (BENIGN, {"sport": (1024, 65535)}),
    "mixed_list": (BENIGN, {"sport": (1024, 65535), "payload": [BENIGN, REQUEST]}),
}


def live(session: Session, n: int, floods: int = 3) -> dict[str, object]:
    out: dict[str, object] = {}
    with session.dut(xdp=FILTER, fates=False) as dut:  # the filter alone, as the xdp fixture has it
        for name, (payload, vary) in FLOODS.items():
            template = IP(dst=dut.ip) / UDP(dport=69) / payload
            search: list[float] = []

            def check(capture: Any, search: list[float] = search) -> None:
                t = time.perf_counter()
                banned = capture.where(payload=b"/etc/passwd")
                search.append(time.perf_counter() - t)
                assert banned.count(Verdict.DROP) == len(banned) == capture.count(Verdict.DROP)

            figures, capture = timed_floods(lambda t=template, v=vary: dut.inject(t, count=n, vary=v), n, check, floods)
            out[name] = {**figures, "dropped": capture.count(Verdict.DROP),
                         "where_payload_s": round(statistics.median(search), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    with Session() as session:  # the engine and receiver: made once, on first use
        out = live(session, args.packets)
    for name, base in (("signature_list", "fixed_signature"), ("signature_byte_sweep", "fixed_signature"),
                       ("mixed_list", "fixed_benign")):
        entry, ref = out[name], out[base]
        assert isinstance(entry, dict) and isinstance(ref, dict)
        out[f"{name}_over_{base}"] = round(int(entry["pps"]) / int(ref["pps"]), 2)
    out["goal_met"] = all(int(out[k]["pps"]) >= 1_000_000 for k in ("signature_list", "signature_byte_sweep"))  # type: ignore[index]
    show(out, args.json)


if __name__ == "__main__":
    main()
