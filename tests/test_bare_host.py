"""A slice of the suite on a bare host: a private mount namespace without tracefs, debugfs or bpffs,
a read-only home, a low open-file limit; and without the kernel's BTF, skips that name it.

The host's own mounts and root namespace are compared before and after: nothing may change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pktassert.netns.snapshot import differences, snapshot
from pktassert.observers import printk

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount namespaces, namespaces, BPF"),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")]

# XDP live and unit (bcc and libbpf), tc, a printing filter, nftables with fates, evidence read by tshark.
SLICE = ["examples/test_port_blocklist.py", "examples/test_port_blocklist_object.py", "examples/test_egress_guard.py",
         "examples/test_edge_firewall.py", "tests/test_printk.py::test_each_line_goes_to_the_packet_that_printed_it",
         "tests/test_evidence.py::test_a_failed_test_leaves_a_pcapng_that_tshark_reads"]
FDS = 128  # pktassert's floor (preflight.FDS_NEEDED), as runners with `ulimit -n` set low have

BARE = """
set -e
for m in /sys/kernel/tracing /sys/kernel/debug/tracing /sys/kernel/debug /sys/fs/bpf; do
  while mountpoint -q "$m"; do umount -l "$m"; done
done
mkdir -p "$HOME" && mount --bind -o ro "$HOME" "$HOME"
{extra}
ulimit -n {fds}
exec "$@"
"""


def run_bare(tmp_path: Path, args: list[str], extra: str = "", fds: int = FDS) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PKTASSERT_", "XDG_")) and k not in ("CI", "HOME")}
    env["HOME"] = str(tmp_path / "home")  # read-only inside: the build cache cannot go to ~/.cache
    script = BARE.format(extra=extra, fds=fds)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "bare",
                           sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _host_state() -> tuple[list[str], list[str], dict]:
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(f.read().splitlines())
    instances = sorted(name for name, readers in printk.instances().items() if not readers)  # orphans only
    return mounts, instances, snapshot()


def _same_host(before: tuple[list[str], list[str], dict]) -> None:
    mounts, instances, root_ns = _host_state()
    assert mounts == before[0]
    assert set(instances) <= set(before[1])  # no orphan left (live ones of xdist workers beside this are theirs)
    assert differences(before[2], root_ns) == []


def test_a_slice_of_the_suite_passes_on_a_bare_host(tmp_path):
    before = _host_state()
    done = run_bare(tmp_path, ["--pktassert-require", "--pktassert-tier", "both", *SLICE])
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and not any(w in summary for w in ("skipped", "failed", "error")), summary
    assert "the build cache cannot be used" in out and "Read-only file system" in out  # said, and a cache of the run's
    _same_host(before)


def test_without_the_kernels_btf_its_users_skip_naming_it(tmp_path):
    before = _host_state()
    hide = "mount -t tmpfs none /sys/kernel/btf"
    done = run_bare(tmp_path, ["-v", "examples/test_port_blocklist.py"], hide)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "FileNotFoundError" not in out
    assert "pktassert: this host lacks kernel BTF" in out
    skips = [ln for ln in out.splitlines() if ln.startswith("SKIPPED")]
    assert skips and all("CONFIG_DEBUG_INFO_BTF=y" in ln for ln in skips)
    # Every libbpf test ("libbpf", "object") skipped, every bcc one ran: bcc needs no BTF.
    assert "passed" in out and "failed" not in out
    ran = [ln for ln in done.stdout.splitlines() if "PASSED" in ln or "SKIPPED" in ln and "::" in ln]
    assert ran and all(("[bcc]" in ln) == ("PASSED" in ln) for ln in ran), ran
    required = run_bare(tmp_path, ["--pktassert-require", "examples/test_port_blocklist_object.py"], hide)
    out = required.stdout + required.stderr
    assert required.returncode == 1 and "Traceback" not in out
    assert "kernel's BTF (/sys/kernel/btf/vmlinux) is missing" in out and "(--pktassert-require is set)" in out
    _same_host(before)


def test_an_open_file_limit_below_the_floor_is_named_with_the_fix(tmp_path):
    done = run_bare(tmp_path, ["--pktassert-require", "examples/test_port_blocklist.py::test_ipv6_telnet_dropped"],
                    fds=64)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out
    assert "the open-file limit (ulimit -n) is 64; pktassert needs 128" in out and "Fix: ulimit -n 1024" in out
