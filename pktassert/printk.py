"""The filter's own debug lines (bpf_printk / bpf_trace_printk), per test and per packet.

A tracefs instance of our own (``instances/pktassert-<pid>``, one per process, so xdist workers
never read each other's) with the bpf_trace_printk event on: the kernel's global trace buffer and
other readers are left alone. A filter that prints gets an inspector built to mark each packet
first (``pktassert <nonce> <tag>``, bpf/stage.h): on one CPU a packet's lines follow its mark
until the next mark, so each line goes to the packet that printed it, and the nonce tells our
program's marks from any other's."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
PREFIX = "pktassert-"
BUFFER_KB = 8192
_LINE = re.compile(r"-\d+\s+\[(\d+)\]\s.*?\sbpf_trace_printk:\s?(.*)$")
_MARK = re.compile(r"pktassert (\d+) (\d+)$")


def _clean_leftovers() -> None:
    """Instances left by processes of ours that died without removing theirs."""
    for d in (TRACEFS / "instances").glob(PREFIX + "*"):
        pid = d.name[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                d.rmdir()


class TracePipe:
    """This process's tracefs instance with bpf_trace_printk on, read without blocking."""

    def __init__(self) -> None:
        _clean_leftovers()
        self.dir = TRACEFS / "instances" / f"{PREFIX}{os.getpid()}"
        with contextlib.suppress(FileExistsError):
            self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text(str(BUFFER_KB))  # per CPU: a flood's lines, mostly
        # Full: drop what comes next, never overwrite what came first (a lost mark would hand its
        # packet's lines to the one before).
        (self.dir / "options/overwrite").write_text("0")
        (self.dir / "events/bpf_trace/bpf_trace_printk/enable").write_text("1")
        self._fd = os.open(self.dir / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        self._rest = b""

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
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                (self.dir / "events/bpf_trace/bpf_trace_printk/enable").write_text("0")
                self.dir.rmdir()


def new_nonce() -> int:
    return secrets.randbelow(2**31 - 1) + 1
