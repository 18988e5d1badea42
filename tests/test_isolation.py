"""Crashes and interrupts leave nothing behind: pytest runs killed mid-test (SIGKILL, SIGINT, an xdist
worker), then the next run, then the root namespace compared with a snapshot taken before."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pktassert.netns import leftovers
from pktassert.netns.snapshot import differences, snapshot

SYN_GUARD = str(Path(__file__).resolve().parent.parent / "examples" / "syn_guard.c")

# The inner test says it is ready (its pid and topology label) through a FIFO, then keeps the
# filter busy until it is killed or told to stop; every loop is bounded.
HOLDER = f"""
import os, subprocess, pytest
from pathlib import Path
from scapy.layers.inet import IP, TCP
pytestmark = pytest.mark.xdp({SYN_GUARD!r}, func="syn_guard")

@pytest.mark.parametrize("n", [1, 2])
def test_hold(xdp, inject, n):
    inject(IP(dst=xdp.ip) / TCP(dport=80, flags="S"), count=10)
    extra = ""
    if os.environ.get("START_CHILDREN"):
        dies_with_us = xdp.dut.ns.popen(["sleep", "600"])
        # A server a user might start carelessly: its own session, not tied to us, in the peer namespace.
        careless = subprocess.Popen(["nsenter", "--net=" + xdp.peer.ns.path, "sleep", "600"], start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        extra = f" {{dies_with_us.pid}} {{careless.pid}}"
    with open(os.environ["READY_FIFO"], "w") as f:
        f.write(f"{{os.getpid()}} {{xdp.topology.label}}{{extra}}\\n")
    for _ in range(20_000):
        if Path(os.environ["STOP_FILE"]).exists():
            return
        inject(IP(dst=xdp.ip) / TCP(dport=80, flags="S"), count=200, vary={{"sport": (1024, 1223)}})
"""


@pytest.fixture
def started():
    """Inner pytest runs, killed (with what they started) if the test fails before it ends them."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    leftovers.clean()


def _start(pytester: pytest.Pytester, started: list, *args: str,
           env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    pytester.makepyfile(test_holder=HOLDER)
    fifo = pytester.path / "ready"
    os.mkfifo(fifo)
    full_env = {**os.environ, "READY_FIFO": str(fifo), "STOP_FILE": str(pytester.path / "stop"), **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                            cwd=pytester.path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    started.append(proc)
    return proc, fifo


def _ready(fifo: Path, lines: int, timeout: float = 240.0) -> list[list[str]]:
    """Wait (bounded) for ``lines`` ready lines from inner tests. Bounded generously: under -n 2 inside
    a suite run under -n 2, the inner workers each compile the bcc filter on a loaded machine (CI once
    took over 60 s)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    got, buf = [], b""
    try:
        while len(got) < lines:
            readable, _, _ = select.select([fd], [], [], timeout)
            assert readable, f"the inner test did not get ready within {timeout} s"
            chunk = os.read(fd, 4096)
            if not chunk:  # no writer right now: wait for the next one to open the FIFO
                os.close(fd)
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                continue
            buf += chunk
            *done, buf = buf.split(b"\n")
            got += [line.decode().split(" ") for line in done if line]
    finally:
        os.close(fd)
    return got


def _ours(pid: int) -> list[leftovers.Leftover]:
    return [lo for lo in leftovers.find() if lo.owner_pid == pid]


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        assert select.select([fd], [], [], timeout)[0], f"process {pid} still runs"
        os.close(fd)


def test_sigkill_mid_test_then_next_run_leaves_nothing(pytester, pktassert_ready, started):
    before = snapshot()
    proc, fifo = _start(pytester, started, "-k", "n-1 or 1", env={"START_CHILDREN": "1"})
    (pid, *label_and_children), = _ready(fifo, 1)
    pytest_pid, dies_with_us, careless = int(pid), int(label_and_children[-2]), int(label_and_children[-1])
    assert pytest_pid == proc.pid
    # While it runs, its namespaces are in use, and cleaning must not touch them.
    assert _ours(proc.pid) and all(lo.owner_alive for lo in _ours(proc.pid))
    freed, _ = leftovers.clean()
    assert not [lo for lo in freed if lo.owner_pid == proc.pid]

    proc.kill()
    proc.wait(timeout=30)
    _wait_gone([dies_with_us])
    # The careless child keeps the peer namespace alive, orphaned; the DUT namespace is gone.
    orphans = _ours(proc.pid)
    assert [(lo.owner_alive, lo.inside) for lo in orphans] == [(False, [careless])]

    # The next run frees it (only it: its owner is dead) and runs normally.
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "n-2 or 2", "-p", "no:randomly")
    if f"owner pid {proc.pid} dead" not in res.stdout.str():
        # Another run beside this one (xdist: the fault matrix's runs start sessions too) may have freed it
        # first, as it should: its owner is dead. Then it must be gone all the same.
        assert not [lo for lo in leftovers.find() if lo.owner_pid == proc.pid], res.stdout.str()[-2000:]
    else:
        res.stdout.fnmatch_lines([f"*pktassert: freed a namespace left by a crashed run*owner pid {proc.pid} dead*"])
    _wait_gone([careless])
    assert _ours(proc.pid) == []
    assert differences(before, snapshot()) == []


def test_sigint_mid_flood_tears_down(pytester, pktassert_ready, started):
    before = snapshot()
    proc, fifo = _start(pytester, started, "-k", "n-1 or 1")
    _ready(fifo, 1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert _ours(proc.pid) == []
    assert differences(before, snapshot()) == []


def test_sigkill_of_one_xdist_worker(pytester, pktassert_ready, started):
    before = snapshot()
    proc, fifo = _start(pytester, started, "-n", "2")
    (a, *_), (b, *_) = _ready(fifo, 2)
    victim, survivor = int(a), int(b)
    os.kill(victim, signal.SIGKILL)
    _wait_gone([victim])
    (pytester.path / "stop").touch()
    out, _ = proc.communicate(timeout=120)
    assert "crashed" in out and "1 passed" in out, out
    assert _ours(victim) == [] and _ours(survivor) == []
    assert differences(before, snapshot()) == []


ORPHAN_MAKER = """
import os, subprocess, sys
from pktassert.netns import Topology
topo = Topology(label="orphan test")
child = subprocess.Popen(["nsenter", "--net=" + topo.dut.ns.path, "sleep", "600"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, os.getpid(), flush=True)
"""  # exits at once: the owner is dead, the child keeps the DUT namespace alive


def _cleanup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pktassert.cleanup", *args], capture_output=True, text=True)


def test_cleanup_command_frees_only_orphans(pktassert_ready):
    # Another run starting meanwhile (a parallel worker's inner pytest) may free the orphan first,
    # as runs do; so up to three tries, and one must see it listed, then free it.
    for _ in range(3):
        maker = subprocess.run([sys.executable, "-c", ORPHAN_MAKER], capture_output=True, text=True, check=True)
        child, owner = map(int, maker.stdout.split())
        try:
            listed = _cleanup("--dry-run", "--owner", str(owner))
            assert listed.returncode == 0
            if not listed.stdout.startswith("orphan: "):
                continue
            assert f"processes inside: [{child}]" in listed.stdout and "orphan test dut" in listed.stdout
            os.kill(child, 0)  # a dry run frees nothing
            cleaned = _cleanup("--owner", str(owner))
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            # Each orphan listed is accounted for: freed by this command, or gone meanwhile (another run's
            # session start frees orphans too: seen once in CI between the listing and the freeing).
            assert ("orphan: " in cleaned.stdout) == ("freed: net:[" in cleaned.stdout or "gone: net:[" in cleaned.stdout), \
                cleaned.stdout
            _wait_gone([child])
            assert _cleanup("--dry-run", "--owner", str(owner)).stdout == "nothing of pktassert's is left\n"
            break
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    else:
        pytest.fail("three orphans in a row were freed by other runs before the cleanup command saw one")


def test_differences_name_what_changed():
    a = {"links": [("lo", 1, False)], "sysctls": {"net.ipv4.ip_forward": "0"}}
    b = {"links": [("lo", 1, False)], "sysctls": {"net.ipv4.ip_forward": "1"}}
    assert differences(a, b) == ["sysctl net.ipv4.ip_forward: '0' -> '1'"]
