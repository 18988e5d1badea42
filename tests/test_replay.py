"""Paced sending and capture replay: rate=, duration=, inject.pcap(speed=), and the example capture."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap, wrpcapng

from pktassert import InjectError, Verdict

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "examples" / "captures" / "portscan.pcap"

pytestmark = pytest.mark.xdp("int pass_all(struct xdp_md *ctx) { return XDP_PASS; }", func="pass_all")
LIVE = pytest.mark.parametrize("tier", ["live"], indirect=True)  # time is replayed in the live tier only


def _span_s(capture) -> float:
    ts = capture.records["ts_ns"]
    return (int(ts.max()) - int(ts.min())) / 1e9


def _last_after_s(capture, start_ns: int) -> float:
    """When the last frame reached the filter, after start_ns (bpf_ktime_get_ns is CLOCK_MONOTONIC,
    as time.monotonic_ns is): pacing must never send a frame before its time."""
    return (int(capture.records["ts_ns"].max()) - start_ns) / 1e9


@LIVE
def test_rate_and_duration_pace_a_flood(xdp, inject):
    start = time.monotonic_ns()
    r = inject(IP(dst=xdp.ip) / UDP(dport=9), rate=5_000, duration=0.2, vary={"sport": (1, 1000)})
    assert r.sent == r.accounted == 1000
    # The inspector's own clock: 1,000 packets at 5,000/s arrive over ~0.2 s, not in a burst.
    assert _last_after_s(r, start) >= 999 / 5_000 and _span_s(r) < 0.3


@LIVE
def test_capture_replayed_with_its_own_timing(xdp, inject):
    fast = inject.pcap(CAPTURE, speed="max")
    start = time.monotonic_ns()
    recorded = inject.pcap(CAPTURE, speed=1.0)     # 1,056 frames 100 us apart: 0.1055 s
    middle = time.monotonic_ns()
    doubled = inject.pcap(CAPTURE, speed=2.0)
    assert fast.sent == recorded.sent == doubled.sent == 1056
    assert _span_s(fast) < 0.05
    assert _last_after_s(recorded, start) >= 0.1055 and _span_s(recorded) < 0.16
    assert _last_after_s(doubled, middle) >= 0.1055 / 2 and _span_s(doubled) < 0.09
    assert [fast.frame(i) for i in (0, 500, 1055)] == [recorded.frame(i) for i in (0, 500, 1055)]


@LIVE
def test_pcapng_and_rate(xdp, inject, tmp_path):
    frames = [Ether(src=xdp.peer.mac, dst=xdp.mac) / IP(src="198.51.100.1", dst=xdp.ip) / TCP(dport=p) for p in range(100)]
    wrpcapng(str(tmp_path / "f.pcapng"), frames)
    start = time.monotonic_ns()
    r = inject.pcap(tmp_path / "f.pcapng", rate=2_000)
    assert r.records["dport"].tolist() == list(range(100)) and r.count(Verdict.PASS) == 100
    assert _last_after_s(r, start) >= 99 / 2_000 and _span_s(r) < 0.08


def test_bad_captures_say_what_is_wrong(xdp, inject, tmp_path):
    (tmp_path / "not.pcap").write_bytes(b"hello, not a capture")
    with pytest.raises(InjectError, match=r"cannot read capture .*not.pcap.* Fix: a pcap or pcapng file"):
        inject.pcap(tmp_path / "not.pcap")
    wrpcap(str(tmp_path / "big.pcap"), [Ether() / IP() / UDP() / (b"x" * 1600)])
    with pytest.raises(InjectError, match="1642-byte frame; the DUT link's MTU is 1500"):
        inject.pcap(tmp_path / "big.pcap")
    with pytest.raises(InjectError, match="speed="):
        inject.pcap(CAPTURE, speed="fast")
    with pytest.raises(InjectError, match="duration= goes with rate="):
        inject(IP(dst=xdp.ip) / UDP(), duration=1)


def test_example_capture_is_made_by_its_script(tmp_path):
    script = ROOT / "examples" / "captures" / "make_portscan.py"
    copy = tmp_path / "make_portscan.py"
    copy.write_text(script.read_text())
    subprocess.run([sys.executable, str(copy)], check=True)
    assert (tmp_path / "portscan.pcap").read_bytes() == CAPTURE.read_bytes()
    # Read back by another tool: 1,024 SYNs to ports 1-1024.
    out = subprocess.run(["tshark", "-r", str(CAPTURE), "-Y", "tcp.flags.syn == 1", "-T", "fields", "-e", "tcp.dstport"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert sorted(map(int, out)) == list(range(1, 1025))
