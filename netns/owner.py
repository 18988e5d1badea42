"""Owner marks: which process made a namespace, in a form that survives PID reuse and names the
process across PID namespaces (containers on one runner number their processes alike: both runs
may be pid 2).

``owner PID@START pid:[INODE]``: the PID in the owner's own PID namespace, its start time, and that
namespace's inode. A reader finds the owner among the processes its /proc shows by all three (the
PID as the owner's namespace numbers it: the last of ``NSpid``). A mark from a PID namespace none of
those processes is in (a sibling container's, or the host's seen from a container) cannot be
checked: it counts as alive, never as dead, so nothing of a live run elsewhere is ever freed."""

from __future__ import annotations

import dataclasses
import os
import re

PREFIX = "pktassert"
_MARK = re.compile(r"\bowner (\d+)@(\d+)(?: pid:\[(\d+)\])?")


@dataclasses.dataclass(frozen=True)
class Mark:
    pid: int
    start: int
    pidns: int | None  # None: a mark of an older pktassert, taken as this PID namespace's


def _start_time(stat: str) -> int:
    """The start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _own_pidns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def mark() -> str:
    """``owner PID@START pid:[INODE]`` for this process."""
    with open("/proc/self/stat") as f:  # /proc/self: right even where /proc is another PID namespace's
        start = _start_time(f.read())
    return f"owner {os.getpid()}@{start} pid:[{_own_pidns()}]"


def owner(label: str) -> Mark | None:
    """The mark in a label of ours, or None if the label is not ours."""
    m = _MARK.search(label) if label.startswith(PREFIX) else None
    if not m:
        return None
    return Mark(int(m[1]), int(m[2]), int(m[3]) if m[3] else None)


@dataclasses.dataclass
class Processes:
    """The processes this /proc shows, by (PID namespace, PID there) -> start time."""

    started: dict[tuple[int, int], int]
    namespaces: set[int]          # PID namespaces we see into (some process we can read is in it)
    unsure: set[int | None]       # start times of processes whose namespace we could not read (None: nor that)

    @classmethod
    def scan(cls) -> Processes:
        started: dict[tuple[int, int], int] = {}
        unsure: set[int | None] = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            stat = None
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                if stat[stat.rindex(")") + 2] in "ZX":
                    continue  # exited, not yet reaped: dead (it still shows its PID namespace)
                ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
                with open(f"/proc/{pid}/status") as f:
                    nspid = next(line for line in f if line.startswith("NSpid:")).split()
            except FileNotFoundError:
                continue  # ended meanwhile
            except (OSError, StopIteration):  # e.g. a sandbox's init that hides its namespaces even from root
                unsure.add(None if stat is None else _start_time(stat))
                continue
            started[(ns, int(nspid[-1]))] = _start_time(stat)
        return cls(started, {ns for ns, _ in started}, unsure)

    def alive(self, m: Mark) -> bool:
        """Whether the owner still runs: found with its start time, or in a PID namespace we cannot see."""
        pidns = _own_pidns() if m.pidns is None else m.pidns
        if pidns not in self.namespaces:
            return True
        seen = self.started.get((pidns, m.pid))
        if seen is not None:
            return seen == m.start  # another start time: the PID was reused
        # Not among the processes we could read: dead, unless it may be one we could not.
        return m.start in self.unsure or None in self.unsure


def alive(m: Mark) -> bool:
    return Processes.scan().alive(m)
