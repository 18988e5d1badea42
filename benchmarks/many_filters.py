"""A session of many distinct filters: what it costs the machine. Runs one pytest session (a child
process, at the usual soft fd limit of 1024) whose tests each load a different filter and inject a
packet, and samples the session's peak RSS, open fds and BPF kernel memory (the memlock of every
BPF map and program it holds, from /proc/PID/fdinfo).

Run as root: .venv/bin/python benchmarks/many_filters.py [--filters 200] [--json]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import show  # benchmarks/report.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest
from scapy.layers.inet import IP, UDP
from pktassert import Verdict

@pytest.mark.parametrize("n", range({filters}))
def test_distinct_filter(request, n):
    # A different program text per test: a distinct compile and load each time.
    source = f"int f(struct xdp_md *ctx) {{{{ return ctx->data_end - ctx->data == {{n}} + 10000 ? XDP_DROP : XDP_PASS; }}}}"
    request.node.add_marker(pytest.mark.xdp(source, func="f"))
    xdp, inject = request.getfixturevalue("xdp"), request.getfixturevalue("inject")
    assert inject(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.PASS
'''


def sample(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, open fds, BPF memlock bytes) of process ``pid`` now."""
    rss = fds = memlock = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            if "map_type:" in info or "prog_type:" in info:
                memlock += next((int(ln.split()[1]) for ln in info.splitlines() if ln.startswith("memlock:")), 0)
    except (OSError, StopIteration):
        pass
    return rss, fds, memlock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--filters", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "test_many.py").write_text(SUITE.format(filters=args.filters))

        def limit() -> None:  # the default soft limit of a login shell
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                                 "--pktassert-require", "--rootdir", tmp, tmp], cwd=tmp, preexec_fn=limit,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0, 0, 0]
        while proc.poll() is None:
            peak = [max(a, b) for a, b in zip(peak, sample(proc.pid))]
            time.sleep(0.25)
        out = proc.stdout.read() if proc.stdout else ""
    last = out.strip().splitlines()[-1] if out.strip() else ""
    show({"filters": args.filters, "exit_code": proc.returncode, "result": last,
          "seconds": round(time.monotonic() - started, 1), "peak_rss_mib": round(peak[0] / 2**20, 1),
          "peak_fds": peak[1], "peak_bpf_memlock_mib": round(peak[2] / 2**20, 1)}, args.json)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
