"""Owner marks: which process made a namespace, in a form that survives PID reuse."""

from __future__ import annotations

import os
import re

PREFIX = "pktassert"
_MARK = re.compile(r"\bowner (\d+)@(\d+)\b")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def mark(pid: int | None = None) -> str:
    """``owner PID@START`` for this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"owner {pid}@{_start_time(pid)}"


def owner(label: str) -> tuple[int, int] | None:
    """The (pid, start) in a label of ours, or None if the label is not ours."""
    m = _MARK.search(label) if label.startswith(PREFIX) else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def alive(pid: int, start: int) -> bool:
    """Whether that very process still runs (a reused PID has another start time)."""
    return _start_time(pid) == start
