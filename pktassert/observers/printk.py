"""The filter's own debug lines (bpf_printk / bpf_trace_printk), per test and per packet.

A tracefs instance of our own (``instances/pktassert-<random>``, one per process, so xdist workers
never read each other's), reached through pktassert's own detached tracefs mount (pktassert/kernel/tracefs.py),
with the bpf_trace_printk event on: the kernel's global trace buffer and other readers are left
alone. A filter that prints gets an inspector built to mark each packet first (``pktassert <nonce>
<tag>``, bpf/stage.h): on one CPU a packet's lines follow its mark until the next mark, so each
line goes to the packet that printed it, and the nonce tells our program's marks from any other's."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets

from pktassert.kernel import tracefs
from pktassert.machine import reaper

PREFIX = "pktassert-"
BUFFER_KB = 8192
_LINE = re.compile(r"-\d+\s+\[(\d+)\]\s.*?\sbpf_trace_printk:\s?(.*)$")
_MARK = re.compile(r"pktassert (\d+) (\d+)$")
_HELD = re.compile(r"/instances/(" + PREFIX + r"[0-9a-f]+)/")  # an fd into an instance, through any mount of tracefs


def instances() -> dict[str, list[int]]:
    """Every instance of pktassert's on this kernel (any run's, any PID or mount namespace's), with
    the processes (as this /proc numbers them) that hold its trace_pipe open: none for a killed run's."""
    names = [d.name for d in (tracefs.root() / "instances").glob(PREFIX + "*")]
    holders: dict[str, list[int]] = {name: [] for name in names}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # ended, or not ours to read
        for fd in fds:
            try:
                m = _HELD.search(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if m and m[1] in holders and int(pid) not in holders[m[1]]:
                holders[m[1]].append(int(pid))
    return holders


def clean_leftovers() -> list[str]:
    """Remove the instances of runs that died without removing theirs; returns their names.

    The kernel refuses to remove an instance whose trace_pipe is open (EBUSY), and every live run
    holds its own open from right after making it: so this needs no process IDs, which do not
    name a process across PID namespaces (containers on one runner). A killed run's own reaper
    (pktassert/machine/reaper.py) removes its instance as soon as it is dead; this is for what a reaper
    could not (killed with it: a container's whole PID namespace ending)."""
    gone = []
    for d in (tracefs.root() / "instances").glob(PREFIX + "*"):
        with contextlib.suppress(OSError):
            d.rmdir()
            gone.append(d.name)
    return gone


class TracePipe:
    """This process's tracefs instance with bpf_trace_printk on, read without blocking."""

    def __init__(self) -> None:
        clean_leftovers()
        for _ in range(3):  # another run's clean_leftovers() may take it before the open below holds it
            self.dir = tracefs.root() / "instances" / f"{PREFIX}{secrets.token_hex(6)}"
            # Told to the reaper before it exists: a kill between mkdir and the open below leaves nothing.
            reaper.register_tracefs(self._relative, tracefs.mount_fd())
            self.dir.mkdir()
            try:
                self._fd = os.open(self.dir / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
                break
            except FileNotFoundError:
                reaper.release_tracefs(self._relative)
                continue
        else:
            raise OSError(errno.EAGAIN, "a tracefs instance of ours was removed three times as it was made")
        self._rest = b""
        try:
            (self.dir / "buffer_size_kb").write_text(str(BUFFER_KB))  # per CPU: a flood's lines, mostly
            # Full: drop what comes next, never overwrite what came first (a lost mark would hand its
            # packet's lines to the one before).
            (self.dir / "options/overwrite").write_text("0")
            (self.dir / "events/bpf_trace/bpf_trace_printk/enable").write_text("1")
        except OSError:
            self.close()
            raise

    @property
    def _relative(self) -> str:
        return f"instances/{self.dir.name}"

    def lines(self) -> list[tuple[int, str]]:
        """(cpu, text) of every line printed since the last call."""
        chunks = []
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                raise
            if not data:
                break
            chunks.append(data)
        text = self._rest + b"".join(chunks)
        *whole, self._rest = text.split(b"\n")
        out = []
        for raw in whole:
            m = _LINE.search(raw.decode(errors="replace"))
            if m:
                out.append((int(m[1]), m[2]))
        return out

    def take(self, nonce: int) -> dict[int, list[str]]:
        """The lines printed for our program's packets since the last call, by tag."""
        out: dict[int, list[str]] = {}
        current: dict[int, tuple[int, int]] = {}  # cpu -> (nonce, tag) of the last mark read there; a
        # packet's lines are all in by the time inject() reads them, so none carries over to the next read
        for cpu, text in self.lines():
            mark = _MARK.match(text)
            if mark:
                current[cpu] = (int(mark[1]), int(mark[2]))
                continue
            owner = current.get(cpu)
            if owner is not None and owner[0] == nonce:
                out.setdefault(owner[1], []).append(text)
        return out

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                (self.dir / "events/bpf_trace/bpf_trace_printk/enable").write_text("0")
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                self.dir.rmdir()
                reaper.release_tracefs(self._relative)


def new_nonce() -> int:
    return secrets.randbelow(2**31 - 1) + 1
