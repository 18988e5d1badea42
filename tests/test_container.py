"""The example suite in a privileged container, as examples/ci/ runs it: `make container-test`.

Not part of `make test` (deselected by its marker, not skipped): the first run builds a Debian 12
root file system with debootstrap and installs its packages (measured: 1 min 48 s here, cold)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from pktassert.netns.snapshot import differences, snapshot

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.container,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, chroot, BPF"),
              pytest.mark.skipif(not os.environ.get("PKTASSERT_CONTAINER_TEST"),
                                 reason="downloads Debian 12 (debootstrap): run with `make container-test`")]


def test_the_example_suite_passes_in_a_privileged_debian_12_container():
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(f.read().splitlines())
    root_ns = snapshot()
    done = subprocess.run(["bash", str(ROOT / "examples/ci/debian12-privileged.sh")], capture_output=True, text=True,
                          timeout=3600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    summary = [ln for ln in out.splitlines() if re.search(r"\d+ passed", ln)][-1]
    assert not re.search(r"skipped|failed|error", summary), summary
    with open("/proc/self/mountinfo") as f:
        assert sorted(f.read().splitlines()) == mounts  # the container's mounts went with its namespace
    assert differences(root_ns, snapshot()) == []
