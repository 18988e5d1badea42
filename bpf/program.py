"""Compile a filter's bcc C source together with the XDP inspector, and load it into the kernel.

Why a wrapper compiled with the source, and not fentry/fexit on the filter as xdpdump does: the
filter is inlined into our program, so the verdict costs no trampoline, needs no BTF in the
filter, and the same program runs unchanged under BPF_PROG_TEST_RUN. The contract in
record.h does not depend on this choice: a compiled ELF object or a tc program can be put behind
it later by linking (bpftool gen object) or by fexit, emitting the same record.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import mmap
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from pktassert.bpf.test_run import TestRunner
from pktassert.errors import ProgramError

HERE = Path(__file__).resolve().parent
ENTRY = "pktassert_xdp"
BARE_ENTRY = "pktassert_bare"  # the filter alone, same maps (inspector.c)
RING_PAGES = 4096  # 16 MiB: room for ~200,000 records between drains

_PRELUDE = """\
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include "record.h"
#ifndef PKTASSERT_RING_PAGES  /* cflags=("-DPKTASSERT_RING_PAGES=N",) sets another size (a power of two) */
#define PKTASSERT_RING_PAGES {pages}
#endif
/* The filter's entry, defined in its own source below: static and inlined into ours (C11 6.2.2p4). */
static __always_inline int {func}(struct xdp_md *ctx);
#define PKTASSERT_FILTER {func}
"""

# Names a filter may not use: ours all start with these (maps, functions, macros, types).
RESERVED = ("pktassert_", "PKTASSERT_")
_RESERVED_NAME = re.compile(r"\b(?:pktassert_|PKTASSERT_)\w*")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)

# Map types whose contents are test state; emptied between tests. Program arrays, ring
# buffers and perf arrays are left alone (they hold wiring, not state).
_STATE_MAPS = {1, 2, 3, 5, 6, 9, 10, 11, 14, 25}  # hash, array, percpu hash/array, lru, lpm, devmaps


@dataclasses.dataclass(frozen=True)
class Program:
    """The filter under test: bcc C source (a file path or the text itself) and its entry function."""

    source: str | os.PathLike[str]
    func: str
    cflags: tuple[str, ...] = ()

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, os.PathLike) or looks_like_path(str(self.source))

    @property
    def name(self) -> str:
        """How messages refer to the source."""
        return str(self.source) if self.is_file else "<source text>"

    def text(self) -> str:
        if not self.is_file:
            return str(self.source)
        try:
            return Path(self.source).read_text()
        except OSError as e:
            raise ProgramError(f"cannot read filter source {self.name}: {e.strerror}. "
                               f"Fix: give a path that exists (relative paths are tried from the "
                               f"test file's folder, then the rootdir).") from None

    def compose(self) -> str:
        """Our prelude and inspector first, then the filter's source with #line, so that no macro
        of the filter's reaches the inspector and compiler messages point at the user's lines."""
        text = self.text()
        _check_entry(self, text)
        _check_reserved(self, text)
        return (_PRELUDE.format(pages=RING_PAGES, func=self.func)
                + f'#line 1 "{HERE / "inspector.c"}"\n' + _inspector() + "#undef PKTASSERT_FILTER\n"
                + f'#line 1 "{self.name}"\n' + text + "\n")

    def load(self, composed: str | None = None) -> "LoadedProgram":
        """Compile and load; ``composed`` is this program's compose() if the caller has it already."""
        return LoadedProgram(self, composed)


def looks_like_path(source: str) -> bool:
    """A source given as a string is a file path unless it reads like C."""
    return "\n" not in source and "{" not in source


@functools.cache
def _inspector() -> str:
    return (HERE / "inspector.c").read_text()


def _check_reserved(prog: Program, text: str) -> None:
    used = sorted(set(_RESERVED_NAME.findall(_COMMENT.sub(" ", text))))
    if prog.func.startswith(RESERVED):
        used = sorted({prog.func, *used})
    if used:
        ours = sorted(n for n in set(_RESERVED_NAME.findall(_inspector())) if n.islower())
        raise ProgramError(f"{prog.name} uses names reserved for pktassert's inspector: {', '.join(used)}. Every name "
                           f"starting with {' or '.join(RESERVED)} is reserved (ours include {', '.join(ours)}). "
                           f"Fix: rename them.")


def _check_entry(prog: Program, text: str) -> None:
    if not re.fullmatch(r"[A-Za-z_]\w*", prog.func):
        raise ProgramError(f"func={prog.func!r} is not a C identifier. Fix: name the filter's entry function.")
    if re.search(rf"\b{prog.func}\s*\([^;{{}}]*\)\s*\{{", text):
        return
    found = re.findall(r"^[ \t]*(?:static\s+)?(?:__always_inline\s+|inline\s+)*int\s+(\w+)\s*\([^;{}]*\)\s*\{",
                       text, re.M)
    raise ProgramError(f"{prog.name} defines no function {prog.func}(). Functions it defines: "
                       f"{', '.join(found) or 'none'}. Fix: pass func= the name of the XDP entry function.")


@contextlib.contextmanager
def _stderr_into(sink: list[str]) -> Iterator[None]:
    """Collect what libbcc and clang print to fd 2 (they bypass Python's sys.stderr)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


def _compiler_lines(log: str, func: str) -> str:
    """clang's errors, each with the source line and caret it prints after it; warnings dropped."""
    out: list[str] = []
    lines = log.splitlines()
    for i, ln in enumerate(lines):
        if "error:" not in ln or len(out) >= 12:
            continue
        out.append(ln)
        for follow in lines[i + 1:i + 3]:
            if re.search(r"(error|warning|note):", follow):
                break
            out.append(follow)
    if any(f"conflicting types for '{func}'" in ln for ln in out):
        out.append(f"hint: the entry function must be `int {func}(struct xdp_md *ctx)`")
    return "\n".join(out) or log.strip()[-2000:]


def _verifier_lines(log: str, context: int = 4) -> str:
    """The verifier's reason and the last instructions it checked, instead of its whole trace.

    (No source line: bcc's line info for composed sources is off by one, and a wrong line is worse.)
    """
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(
        ("bpf: Failed to load program", "processed ", "verification time", "stack depth", ";"))]
    insn = re.compile(r"^\d+: \(")
    end = len(lines)
    start = end
    while start > 0 and not insn.match(lines[start - 1]) and end - start < 4:
        start -= 1
    recent = [ln.split(" ; ")[0].rstrip() for ln in lines[:start] if insn.match(ln)][-context:]
    return "\n".join([*lines[start:end], "last instructions:", *("  " + ln for ln in recent)])


class LoadedProgram:
    """The composed program loaded in the kernel, its maps, and the record layout it emits."""

    def __init__(self, program: Program, composed: str | None = None) -> None:
        from bcc import BPF  # imported late: the plugin must load (and skip cleanly) without bcc

        self.program = program
        text = composed or program.compose()
        log: list[str] = []
        try:
            with _stderr_into(log):
                self.bpf = BPF(text=text.encode(), cflags=[f"-I{HERE}", "-Wno-unused-function", *program.cflags])
        except Exception:
            raise ProgramError(f"{program.name} does not compile:\n{_compiler_lines(log[0], program.func)}") from None
        try:
            with _stderr_into(log):
                self.fn = self.bpf.load_func(ENTRY.encode(), BPF.XDP)
        except Exception as e:
            self.bpf.cleanup()
            raise ProgramError(f"the verifier rejected {program.func}() from {program.name}: "
                               f"{_verifier_lines(log[-1]) or e}") from None
        self.fd: int = self.fn.fd
        leaf = self.bpf[b"pktassert_scratch"].Leaf  # per-CPU: an array of the record, one per CPU
        self.record_type = leaf._type_ if issubclass(leaf, ctypes.Array) else leaf
        self._unit_slots: mmap.mmap | None = None
        self._next_tag = 0

    # Tags are unique for the life of the loaded program, so a record left in a slot by an earlier
    # frame (another test's) can never pass for a later frame's.
    TAG_LIMIT = 0xFFFFFFFF  # PKTASSERT_UNTAGGED

    def take_tags(self, n: int) -> int:
        """The first of ``n`` fresh consecutive tags."""
        if self._next_tag + n >= self.TAG_LIMIT:
            # Wrapped after 4 billion frames: forget every slot, so old ones cannot match again.
            slots = np.frombuffer(self.unit_slots(), np.uint8)
            slots[:] = 0
            del slots
            self._next_tag = 0
        first = self._next_tag
        self._next_tag += n
        return first

    @functools.cached_property
    def runner(self) -> TestRunner:
        """Test runs of this program (its buffers are reused, so one per program)."""
        return TestRunner(self.fd)

    @functools.cached_property
    def bare_runner(self) -> TestRunner:
        """Test runs of the filter without the inspector (for cost()); loaded on first use, same maps."""
        from bcc import BPF

        return TestRunner(self.bpf.load_func(BARE_ENTRY.encode(), BPF.XDP).fd)

    def program_fd(self, func: str) -> int:
        """A function of the filter's source loaded as its own XDP program (for program arrays)."""
        from bcc import BPF

        if func.startswith(RESERVED):
            raise ProgramError(f"{func!r} is pktassert's, not a function of {self.program.name}.")
        log: list[str] = []
        try:
            with _stderr_into(log):
                return int(self.bpf.load_func(func.encode(), BPF.XDP).fd)
        except Exception as e:
            raise ProgramError(f"cannot load {func}() of {self.program.name} for a program array: "
                               f"{_verifier_lines(log[-1]) or e}. Fix: name a function `int {func}(struct xdp_md *ctx)` "
                               f"defined (not static) in the filter's source.") from None

    def unit_slots(self) -> mmap.mmap:
        """The inspector's record slots for unit runs (pa_unit), mapped into our memory."""
        if self._unit_slots is None:
            table = self.bpf[b"pktassert_slots"]
            size = table.max_entries * ctypes.sizeof(self.record_type)
            self._unit_slots = mmap.mmap(table.map_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return self._unit_slots

    def read_slots(self, first_tag: int, records: np.ndarray) -> np.ndarray:
        """Copy the records of tags first_tag... from the slots into ``records`` (consecutive
        tags: at most two slices)."""
        slots = np.frombuffer(self.unit_slots(), records.dtype)
        n, at = len(records), first_tag % len(slots)
        head = min(n, len(slots) - at)
        records[:head] = slots[at:at + head]
        records[head:] = slots[:n - head]
        del slots  # the mmap must have no views left when the program is closed
        return records

    def state_maps(self) -> dict[str, object]:
        """The filter's maps that hold state (its own, not the inspector's), by name."""
        from bcc import libbcc

        lib = libbcc.lib
        lib.bpf_num_tables.argtypes, lib.bpf_num_tables.restype = [ctypes.c_void_p], ctypes.c_size_t
        lib.bpf_table_name.argtypes, lib.bpf_table_name.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_char_p
        names = [lib.bpf_table_name(self.bpf.module, i) for i in range(lib.bpf_num_tables(self.bpf.module))]
        return {n.decode(): self.bpf[n] for n in names if not n.startswith(b"pktassert_") and self.bpf[n].ttype in _STATE_MAPS}

    def reset(self) -> None:
        """Fresh state for the next test: empty the filter's state maps and our counters."""
        for table in self.state_maps().values():
            table.clear()
        self.bpf[b"pktassert_counters"].clear()

    def close(self) -> None:
        if self._unit_slots is not None:
            self._unit_slots.close()
        self.bpf.cleanup()
