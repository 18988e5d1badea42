"""Runs in different PID namespaces (privileged CI containers on one runner: both runs are pid 1 or 2)
never take each other's live namespaces or tracefs instances for a dead run's (issue 20, item 8).
Real PID namespaces (``unshare --pid --fork --mount-proc``), real owner marks, real sweeps."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys

import pytest

from pktassert.netns import leftovers

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: PID and network namespaces"),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")]
IN_NEW_PIDNS = ["unshare", "--pid", "--fork", "--mount-proc"]

# A run's stand-in: namespaces with its owner mark, a process living in the DUT one, a tracefs instance.
TWIN = """
import os, sys
from pktassert.netns import Topology, owner
from pktassert.observers.printk import TracePipe
topo = Topology(label=sys.argv[1])
inside = topo.dut.ns.popen(["sleep", "600"])
pipe = TracePipe()
print(os.getpid(), topo.dut.ns.fd, pipe.dir.name, owner.mark(), flush=True)
sys.stdin.readline()
print("inside runs" if inside.poll() is None else f"inside ended {inside.returncode}", flush=True)
sys.stdin.readline()
"""


def _line(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"no line from {proc.args[-2:]}: {proc.communicate()}")
    return line.strip()


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*IN_NEW_PIDNS, sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def _pid_inside(unshare: subprocess.Popen) -> int:
    """The pid (as this /proc numbers it) of the process unshare --fork started: pid 1 of the new namespace."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                if f"PPid:\t{unshare.pid}\n" in f.read():
                    return int(pid)
        except OSError:
            continue
    raise AssertionError("unshare's child is gone")


def _end(*procs: subprocess.Popen) -> None:
    """Kill unshare and pid 1 of its namespace, and wait until the kernel has ended every process there
    (pid 1 exits last: it waits for them)."""
    for proc in procs:
        first = None
        if proc.poll() is None:
            with contextlib.suppress(AssertionError, ProcessLookupError):
                first = os.pidfd_open(_pid_inside(proc))
            os.killpg(proc.pid, signal.SIGKILL)
        if first is not None:
            assert select.select([first], [], [], 30)[0], "pid 1 of the namespace did not end"
            os.close(first)
        proc.communicate()


def _ours(label: str) -> list[leftovers.Leftover]:
    return [lo for lo in leftovers.find() if label in lo.label]


def test_a_sweep_from_the_outer_pid_namespace_leaves_a_live_run_in_an_inner_one_alone():
    twin = _start(TWIN, "pidns outer sweep")
    try:
        pid, _, _, *mark = _line(twin).split()
        host_pid = _pid_inside(twin)
        assert pid == "1"  # pid 1 there; this /proc's pid 1 is another process
        leftovers.clean()  # what the next run, or pktassert-cleanup, does here
        twin.stdin.write("\n")
        twin.stdin.flush()
        assert _line(twin) == "inside runs", "the sweep took a live run's namespace for a dead one"
        assert [lo.owner_alive for lo in _ours("pidns outer sweep")] == [True, True]  # DUT and peer
        pidns = os.stat(f"/proc/{host_pid}/ns/pid").st_ino
        assert " ".join(mark).endswith(f" pid:[{pidns}]")  # the mark names its PID namespace
    finally:
        _end(twin)


# pid 1 of a PID namespace that starts a twin (pid 1 of one inside it), then sweeps as a run would.
SWEEPER = """
import json, os, subprocess, sys
from pktassert.observers import printk
from pktassert.netns import leftovers, owner
twin = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
twin_pid, _, instance, *twin_mark = twin.stdout.readline().split()
freed, _ = leftovers.clean()
removed = printk.clean_leftovers()
twin.stdin.write("\\n"); twin.stdin.flush()
said = twin.stdout.readline().strip()
ours = [lo for lo in leftovers.find() if sys.argv[1] in lo.label]
print(json.dumps({"me": os.getpid(), "twin": int(twin_pid), "my_mark": owner.mark(), "twin_mark": " ".join(twin_mark),
                  "freed": [lo.label for lo in freed if sys.argv[1] in lo.label], "instance_removed": instance in removed,
                  "twin_says": said, "alive": [lo.owner_alive for lo in ours]}), flush=True)
twin.kill()
"""


def test_two_runs_both_pid_1_in_nested_pid_namespaces_never_take_each_other_for_dead():
    label = "pidns twins"
    sweeper = _start(SWEEPER, label, *IN_NEW_PIDNS, sys.executable, "-c", TWIN, label)
    try:
        said = json.loads(_line(sweeper, 120))
    finally:
        _end(sweeper)
    assert (said["me"], said["twin"]) == (1, 1)  # the same PID, two PID namespaces
    assert said["my_mark"] != said["twin_mark"]
    assert said["twin_says"] == "inside runs" and said["freed"] == [], said  # the sweep left the live twin alone
    assert said["alive"] == [True, True], said
    assert not said["instance_removed"], said  # its tracefs instance too (held open: the kernel says EBUSY)


def test_a_mark_from_a_pid_namespace_no_process_here_is_in_counts_as_alive():
    label = "pidns unseen owner"
    twin = _start(TWIN, label)
    holder = None
    try:
        _, fd, _, *_ = _line(twin).split()
        # A process of this PID namespace keeps the twin's DUT namespace alive after the twin's whole
        # PID namespace has ended: its owner can no longer be looked up from here, nor told dead.
        holder = subprocess.Popen(["nsenter", f"--net=/proc/{_pid_inside(twin)}/fd/{fd}", "sleep", "600"],
                                  start_new_session=True)
        while not _ours(label) or len(_ours(label)[0].inside) == 0:  # bounded: the holder is in within ms
            if holder.poll() is not None:
                pytest.fail("nsenter failed")
            select.select([], [], [], 0.01)
        _end(twin)
        found = _ours(label)
        assert [(lo.owner_alive, lo.owner_seen, lo.inside) for lo in found] == [(True, False, [holder.pid])]
        assert "which no process here is in (taken as running)" in found[0].describe()
        freed, _ = leftovers.clean()
        assert [lo for lo in freed if label in lo.label] == [] and holder.poll() is None
    finally:
        _end(twin)
        if holder is not None:
            holder.kill()
            holder.wait()
