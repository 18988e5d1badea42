"""The fault matrix's machinery (tests/test_kills.py): run the target suite (tests/kill_targets/), killed
at a phase by pktassert's failpoints (pktassert/machine/faults.py), wait for every process it started (its
reapers included), then find what it left, by kind; then run it again.

What a run leaves is told from what runs beside it (`make test` runs this under xdist) by what is
the run's own: its build cache, evidence folder and TMPDIR are private to the case; its processes
carry a token in their environment; the target suite's conftest notes its tracefs instances and the
pids of its pytest processes, which the owner marks of its namespaces name."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "kill_targets" / "target_suite.py"
TOKEN = "KILL_TARGET_TOKEN"
NOTES = "KILL_TARGET_NOTES"
# kind -> (signal, whom): SIGKILL, SIGTERM and SIGINT of pytest, SIGKILL of an xdist worker (-n 1)
KINDS = {"SIGKILL": ("SIGKILL", "pytest"), "SIGTERM": ("SIGTERM", "pytest"), "SIGINT": ("SIGINT", "pytest"),
         "worker SIGKILL": ("SIGKILL", "worker")}


def processes_with(token: str) -> list[int]:
    """The processes whose environment carries ``token`` (everything a target run started: pytest, its
    workers, their reapers, anything they spawned), as this /proc numbers them."""
    needle = f"{TOKEN}={token}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def wait_gone(token: str, timeout: float = 30.0) -> list[int]:
    """Wait (bounded) until no process carries ``token``; returns those still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with(token)
        if not left or time.monotonic() >= deadline:
            return left
        for pid in left:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            finally:
                os.close(fd)


def end_stragglers(token: str) -> list[str]:
    """Wait for the run's processes; those still there after the wait are described, then killed (the
    run's own: its token says so), so that the next case starts clean."""
    out = []
    for pid in wait_gone(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f"pid {pid}: {f.read()[:120]!r}")
            os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    return out


def tracefs_instances() -> set[str]:
    """pktassert's instances on this kernel, through a tracefs mount of this process's own."""
    from pktassert.kernel import tracefs
    from pktassert.observers import printk

    return {p.name for p in (tracefs.root() / "instances").glob(printk.PREFIX + "*")}


def mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return set(f.read().splitlines())


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else []


def kinds_of(names: list[str]) -> set[str]:
    """Cache entries by kind: keys, tokens and digests (8 hex digits or more) made alike."""
    return {re.sub(r"[0-9a-f]{8,}", "<h>", n) for n in names}


def broken_pcapngs(folder: Path) -> list[str]:
    """Evidence a killed run left half written: temporaries (.part) and pcapng files cut inside a block."""
    out = []
    for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if p.is_dir():
            continue
        if p.name.endswith(".part"):
            out.append(str(p.relative_to(folder)))
            continue
        data, at = p.read_bytes(), 0
        while at + 12 <= len(data):  # blocks: type, total length, body, total length again
            length = int.from_bytes(data[at + 4:at + 8], "little")
            if length < 12 or at + length > len(data):
                break
            at += length
        if at != len(data) or not data:
            out.append(f"{p.relative_to(folder)} (cut at byte {at} of {len(data)})")
    return out


class Case:
    """One target run's private places, and the runs in them."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.cache, self.evidence, self.tmp = folder / "cache", folder / "evidence", folder / "tmp"
        self.notes, self.fired = folder / "notes", folder / "fired"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def run(self, kill: tuple[str, str, str] | None = None, timeout: float = 300.0) -> tuple[int, str, str]:
        """The target suite, killed at ``kill`` = (phase, signal, pytest|worker) if given; waits for its
        every process. Returns (exit code, output, token)."""
        token = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PKTASSERT_"))}
        env.update({TOKEN: token, NOTES: str(self.notes), "TMPDIR": str(self.tmp)})
        args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--pktassert-require", str(TARGET),
                "--pktassert-cache-dir", str(self.cache), "--pktassert-evidence", "all",
                "--pktassert-evidence-dir", str(self.evidence)]
        if kill is not None:
            phase, sig, whom = kill
            env.update({"PKTASSERT_KILL_AT": f"{phase}:{sig}:{whom}", "PKTASSERT_KILL_FIRED": str(self.fired)})
            if whom == "worker":
                args += ["-n", "1"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f"\n(killed after {timeout} s)"
        return proc.returncode, out, token

    def left(self, token: str, before: dict, reference: set[str]) -> dict[str, list[str]]:
        """What the run with ``token`` left, by kind (empty lists: nothing), once all its processes are gone."""
        from pktassert.netns import leftovers
        from pktassert.netns.snapshot import differences, snapshot

        found: dict[str, list[str]] = {"process": end_stragglers(token)}
        notes = self.notes.read_text() if self.notes.exists() else ""
        found["tracefs instance"] = sorted(set(re.findall(r"^instance (\S+)$", notes, re.M)) & tracefs_instances())
        pids = {int(p) for p in re.findall(r"^pid (\d+)$", notes, re.M)}  # the run's pytest and workers: its marks
        found["netns"] = [lo.describe() for lo in leftovers.find() if lo.owner_pid in pids and not lo.owner_alive]
        found["root namespace"] = differences(before["root"], snapshot())
        found["mount"] = sorted(mounts() - before["mounts"])
        found["cache"] = sorted(n for n in listing(self.cache) if kinds_of([n]) - reference)
        # pytest-of-<user>: pytest's own base temporary folders (xdist makes one for its workers), kept by design
        found["tmp"] = [n for n in listing(self.tmp) if not n.startswith("pytest-of-")]
        found["evidence"] = broken_pcapngs(self.evidence)
        found["tmp outside TMPDIR (advisory)"] = sorted(n for n in set(os.listdir("/tmp")) - before["tmp"]
                                                        if n.startswith("pktassert"))
        return found


def before() -> dict:
    from pktassert.netns.snapshot import snapshot

    return {"root": snapshot(), "mounts": mounts(), "tmp": set(os.listdir("/tmp"))}


def record(result: dict) -> None:
    """Append a case's result to $PKTASSERT_KILLS_REPORT (JSON lines), for the matrix's figures."""
    where = os.environ.get("PKTASSERT_KILLS_REPORT")
    if where:
        with open(where, "a") as f:
            f.write(json.dumps(result) + "\n")
