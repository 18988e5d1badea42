"""Live-tier injection side by side on one veth with our inspector attached: pktassert's engine,
a reused raw socket in a Python loop, tcpreplay --topspeed and scapy's sendp(list), same frames.

Run as root: .venv/bin/python benchmarks/inject.py [--json] [--packets N] [--scapy-packets M]

Each sender's "accounted" is what the inspector's exact per-CPU counters saw arrive for it. Rates
are from one run on a shared machine: compare them with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import errno
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import show  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from pktassert import BccSource, Session, XdpUnderTest
from pktassert.frames.flood import build
from pktassert.netns import Topology

SYN_GUARD = BccSource(Path(__file__).resolve().parent.parent / "examples" / "syn_guard.c", "syn_guard")
VARY = {"src": "198.51.100.0/24", "sport": (1024, 65535), "seq": (0, 2**32 - 1)}


def counted(xdp: XdpUnderTest, run) -> tuple[float, int, int]:
    """(seconds, sent, frames the inspector saw) for ``run() -> (seconds, sent)``."""
    before = xdp.tally().frames
    seconds, sent = run()
    deadline = time.monotonic() + 5
    while xdp.tally().frames - before < sent and time.monotonic() < deadline:
        time.sleep(0.001)  # the DUT's NAPI may still be draining; bounded
    return seconds, sent, xdp.tally().frames - before


def raw_socket(topo: Topology, frames: list[bytes]) -> tuple[float, int]:
    import socket

    sock = topo.peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((topo.peer.ifname, 0))
    sent = 0
    t = time.perf_counter()
    for f in frames:
        try:
            sock.send(f)
            sent += 1
        except OSError as e:  # the veth's queue is full: that frame is lost, as with any sender
            if e.errno != errno.ENOBUFS:
                raise
    seconds = time.perf_counter() - t
    sock.close()
    return seconds, sent


def tcpreplay(topo: Topology, pcap: str) -> tuple[float, int, str]:
    # tcpreplay has no Python API; it runs inside the peer namespace through nsenter.
    t = time.perf_counter()
    out = subprocess.run(["nsenter", f"--net={topo.peer.ns.path}", "tcpreplay", "--topspeed", "-q",
                          "-i", topo.peer.ifname, pcap], capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - t
    sent = int(re.search(r"Actual: (\d+) packets", out).group(1))
    rated = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out)
    return seconds, sent, rated.group(1) if rated else "?"


# What a scapy user writes for the same flood: the packets built from the template, then sendp(list).
SCAPY = """
import sys, time
from scapy.all import Ether, IP, TCP, sendp
n, iface, src, dst, mac_src, mac_dst = int(sys.argv[1]), *sys.argv[2:]
t = time.perf_counter()
frames = [Ether(src=mac_src, dst=mac_dst) / IP(src=f"198.51.100.{i % 256}", dst=dst)
          / TCP(sport=1024 + i % 64512, dport=80, flags="S", seq=i) for i in range(n)]
sendp(frames, iface=iface, verbose=False)
print(time.perf_counter() - t, len(frames))
"""


def scapy_sendp(topo: Topology, n: int) -> tuple[float, int]:
    # In its own process entered into the peer namespace: scapy takes interfaces from where it is imported.
    out = subprocess.run(["nsenter", f"--net={topo.peer.ns.path}", sys.executable, "-c", SCAPY, str(n),
                          topo.peer.ifname, topo.peer.ip, topo.dut.ip, topo.peer.mac, topo.dut.mac],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--peer-packets", type=int, default=200_000, help="for the raw socket and tcpreplay")
    ap.add_argument("--scapy-packets", type=int, default=5_000)
    args = ap.parse_args()

    results: dict[str, dict[str, object]] = {}
    # The filter alone (fates=False), as the xdp fixture has it: the senders are what is compared.
    with Session() as session, session.dut(xdp=SYN_GUARD, fates=False) as dut, tempfile.TemporaryDirectory() as tmp:
        xdp, topo, inject = dut.xdp, dut.topology, dut.inject
        assert xdp is not None
        template = IP(dst=xdp.ip) / TCP(dport=80, flags="S")
        rows = build(Ether(src=xdp.peer.mac, dst=xdp.mac) / template, max(args.peer_packets, args.scapy_packets), VARY)
        frames = [r.tobytes() for r in rows]
        pcap = str(Path(tmp) / "syn.pcap")
        wrpcap(pcap, [Ether(f) for f in frames[:args.peer_packets]])

        inject(template, count=1000, vary=VARY)  # warm: engine arena pages, first-call costs

        def ours() -> tuple[float, int]:
            t = time.perf_counter()
            capture = inject(template, count=args.packets, vary=VARY)
            seconds = time.perf_counter() - t
            results["pktassert"]["capture_accounted"] = capture.accounted
            return seconds, capture.sent

        results["pktassert"] = {}
        peers = (("pktassert", ours), ("raw_socket", lambda: raw_socket(topo, frames[:args.peer_packets])),
                 ("tcpreplay", lambda: tcpreplay(topo, pcap)[:2]), ("scapy", lambda: scapy_sendp(topo, args.scapy_packets)))
        for name, run in peers:
            seconds, sent, seen = counted(xdp, run)
            results.setdefault(name, {}).update(pps=round(sent / seconds), sent=sent, accounted=seen,
                                                seconds=round(seconds, 3))
        results["tcpreplay"]["own_rated_pps"] = tcpreplay(topo, pcap)[2]

    ours_pps = results["pktassert"]["pps"]
    ratios = {f"vs_{k}": round(ours_pps / v["pps"], 1) for k, v in results.items() if k != "pktassert"}
    out = {"frame_bytes": len(frames[0]), **results, "ratios": ratios,
           "goal_met": bool(ours_pps >= 1_000_000 and results["pktassert"]["accounted"] == results["pktassert"]["sent"]
                            and ratios["vs_tcpreplay"] >= 2.5 and ratios["vs_scapy"] >= 300)}
    show(out, args.json)


if __name__ == "__main__":
    main()
