"""Find namespaces of ours that outlived their owner, and free them.

Our namespaces are held only by file descriptors, so the kernel frees them when the owning
process exits, however it exits. One thing can keep one alive: another process that lives
inside it (a server a test started there) or holds an fd to it. This finds such namespaces
by the owner mark on their veth (netns/owner.py) and, only when that owner is dead, kills the
processes that live inside them, as Neutron's namespace fixture and mininet's `mn -c` do.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import signal
import time

from pyroute2 import IPRoute, netns

from . import owner

_NS = re.compile(r"^net:\[(\d+)\]$")


@dataclasses.dataclass
class Leftover:
    inode: int
    label: str
    owner_pid: int        # as the owner's own PID namespace numbers it
    owner_alive: bool     # True also when its PID namespace is not one we can see into
    inside: list[int]     # processes living in the namespace
    holders: list[int]    # other processes holding an fd to it
    owner_pidns: int | None = None
    owner_seen: bool = True  # False: its PID namespace is not one we see into (alive, for all we know)

    def describe(self) -> str:
        state = "running" if self.owner_alive else "dead"
        if not self.owner_seen:
            state = f"in PID namespace pid:[{self.owner_pidns}], which no process here is in (taken as running)"
        return (f"namespace net:[{self.inode}] '{self.label}': owner pid {self.owner_pid} {state}; "
                f"processes inside: {self.inside or 'none'}; fd holders: {self.holders or 'none'}")


def _references() -> dict[int, tuple[str, set[int], set[int]]]:
    """Every network namespace some process refers to: inode -> (a path to it, pids inside, pids with an fd)."""
    found: dict[int, tuple[str, set[int], set[int]]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        links = [(f"/proc/{pid}/ns/net", True)]
        try:
            links += [(f"/proc/{pid}/fd/{fd}", False) for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass  # the process ended, or is not ours to read
        for path, is_home in links:
            try:
                m = _NS.match(os.readlink(path))
            except OSError:
                continue
            if m:
                entry = found.setdefault(int(m.group(1)), (path, set(), set()))
                (entry[1] if is_home else entry[2]).add(int(pid))
    return found


def _labels(path: str) -> list[str]:
    """The interface aliases in the namespace at ``path`` (entered by this thread, then left)."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns.setns(target)
        with IPRoute() as ipr:
            return [link.get_attr("IFLA_IFALIAS") or "" for link in ipr.get_links()]
    except OSError:
        return []
    finally:
        netns.setns(home)
        os.close(home)
        os.close(target)


def find() -> list[Leftover]:
    """Namespaces of ours (any owner) that some process refers to, other than this process's own."""
    me = int(os.readlink("/proc/self"))  # as /proc numbers us (it may be an outer PID namespace's)
    out = []
    processes: owner.Processes | None = None
    for inode, (path, inside, holders) in _references().items():
        if inside == set() and holders <= {me}:
            continue  # held only by us: our own, alive by definition
        for label in _labels(path):
            mark = owner.owner(label)
            if mark:
                processes = processes or owner.Processes.scan()
                seen = mark.pidns is None or mark.pidns in processes.namespaces
                out.append(Leftover(inode, label, mark.pid, processes.alive(mark), sorted(inside),
                                    sorted(holders - inside - {me}), mark.pidns, seen))
                break
    return out


def clean(wait_s: float = 5.0, owner_pid: int | None = None) -> tuple[list[Leftover], list[Leftover]]:
    """Free namespaces whose owner is dead (that owner's only, if given): kill what lives inside
    them. Returns (freed, not freed)."""
    orphans = [lo for lo in find() if not lo.owner_alive and owner_pid in (None, lo.owner_pid)]
    exits = []
    for lo in orphans:
        for pid in lo.inside:
            try:
                exits.append(os.pidfd_open(pid))  # readable once the process has exited
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait_s
    for fd in exits:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        os.close(fd)
    still = {lo.inode for lo in find()}
    return [lo for lo in orphans if lo.inode not in still], [lo for lo in orphans if lo.inode in still]
