"""Compile a filter's bcc C source together with the XDP inspector, and load it into the kernel.

Why a wrapper compiled with the source, and not fentry/fexit on the filter as xdpdump does: the
filter is inlined into our program, so the verdict costs no trampoline, needs no BTF in the
filter, and the same program runs unchanged under BPF_PROG_TEST_RUN. The contract in
record.h does not depend on this choice: a compiled ELF object or a tc program can be put behind
it later by linking (bpftool gen object) or by fexit, emitting the same record.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
from pathlib import Path

from pktassert.bpf import DIR as HERE
from pktassert.build import compile_check, diagnostics, prints, source_check
from pktassert.build.source_check import RESERVED
from pktassert.errors import ProgramError
from pktassert.hooks.table import HOOKS
from pktassert.kernel.fd_table import FdTable
from pktassert.programs.loaded import Loaded

BARE_ENTRY = "pktassert_bare"  # the filter alone, same maps (inspector.c)
RING_PAGES = 1024  # 4 MiB: ~47,000 records (88 bytes each in the ring), room for one socket-path chunk and more

_PRELUDE = """\
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include "record.h"
{hook_define}#ifndef PKTASSERT_RING_PAGES  /* cflags=("-DPKTASSERT_RING_PAGES=N",) sets another size (a power of two) */
#define PKTASSERT_RING_PAGES {pages}
#endif
/* The filter's entry, defined in its own source below: static and inlined into ours (C11 6.2.2p4). */
static __always_inline int {func}({ctx}ctx);
#define PKTASSERT_FILTER {func}
"""

_PROBE = "int stack_probe({ctx}ctx) {{ return 0; }}"  # a filter that takes no stack


@dataclasses.dataclass(frozen=True)
class Program:
    """The filter under test: bcc C source (a file path or the text itself) and its entry function."""

    source: str | os.PathLike[str]
    func: str
    cflags: tuple[str, ...] = ()
    hook: str = "xdp"  # where it hooks: a key of pktassert/hooks/table.py's HOOKS
    direction: str | None = None  # tc: "ingress" (the default) or "egress"

    def __post_init__(self) -> None:
        check_hook(self.hook, self.direction)
        source_check.check_source(self.source)
        source_check.check_func(self.func)
        object.__setattr__(self, "cflags", source_check.check_cflags(self.cflags))  # a list too, kept as a tuple

    kind = "bcc source"

    def cache_key(self) -> tuple:
        return ("bcc", self.compose(), self.func, self.cflags, self.hook)

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, os.PathLike) or looks_like_path(str(self.source))

    @property
    def name(self) -> str:
        """How messages refer to the source."""
        return str(self.source) if self.is_file else "<source text>"

    def text(self) -> str:
        if not self.is_file:
            return source_check.check_text(str(self.source), self.name)
        try:
            data = Path(self.source).read_bytes()
        except OSError as e:
            raise ProgramError(f"cannot read filter source {self.name}: {e.strerror}. "
                               f"Fix: give a path that exists (relative paths are tried from the "
                               f"test file's folder, then the rootdir).") from None
        return source_check.decode(data, self.name)

    def compose(self) -> str:
        """Our prelude and inspector first, then the filter's source with #line, so that no macro
        of the filter's reaches the inspector and compiler messages point at the user's lines."""
        text = self.text()
        source_check.check_entry(self.name, self.func, text)
        source_check.check_hook_ctx(self.name, self.func, text, self.hook)
        source_check.check_reserved(self.name, text, _inspector())
        marks = "#define PKTASSERT_PRINTK\n" if prints.in_source(text) else ""
        return (prelude(self.func, self.hook) + marks
                + f'#line 1 "{HERE / "inspector.c"}"\n' + _inspector() + "#undef PKTASSERT_FILTER\n"
                + f'#line 1 "{self.name}"\n' + text + "\n")

    def load(self) -> LoadedProgram:
        """Compile with bcc and load."""
        return LoadedProgram(self)


def prelude(func: str, hook: str = "xdp") -> str:
    return _PRELUDE.format(pages=RING_PAGES, func=func, ctx=HOOKS[hook].ctx,
                           hook_define=f"#define {HOOKS[hook].define}\n" if HOOKS[hook].define else "")


def check_hook(hook: object, direction: object = None) -> None:
    if hook not in HOOKS:
        raise ProgramError(f"hook={hook!r}: pktassert puts filters at {', '.join(map(repr, HOOKS))}.")
    if direction is None:
        return
    directions = HOOKS[hook].directions  # type: ignore[index]
    if len(directions) < 2:
        raise ProgramError(f"direction={direction!r}: a {hook} filter has no direction to choose. Fix: drop direction=.")
    if direction not in directions:
        raise ProgramError(f"direction={direction!r}: {hook} filters attach at {' or '.join(map(repr, directions))}.")


def looks_like_path(source: str) -> bool:
    """A source given as a string is a file path unless it reads like C."""
    return "\n" not in source and "{" not in source


@functools.cache
def _inspector() -> str:
    return (HERE / "inspector.c").read_text()


def compile_flags(cflags: tuple[str, ...]) -> tuple[str, ...]:
    """What bcc compiles a composed source with, in the check's child process and here alike.
    -Werror=undefined-internal: an entry function that a macro names (ENTRY(f) {...}) is found by
    clang, not by source_check; one that ends up undefined would load as a jump to nowhere."""
    return (f"-I{HERE}", "-Wno-unused-function", "-Werror=undefined-internal", *cflags)


def _stack_share(program: Program, flags: tuple[str, ...]) -> tuple[int | None, bool, int | None, str]:
    """After a stack overflow: the inspector's stack depth (with a filter that takes none), and
    whether the filter compiles without the inspector, its depth, and what LLVM said then."""
    probe = Program(_PROBE.format(ctx=HOOKS[program.hook].ctx), "stack_probe", program.cflags, program.hook).compose()
    includes = "".join(ln + "\n" for ln in _PRELUDE.splitlines() if ln.startswith("#include"))
    alone = includes + f'#line 1 "{program.name}"\n' + program.text() + "\n"
    hook = HOOKS[program.hook]
    inspector, out = compile_check.stack_depths(probe, alone, flags, program.func, hook.entry, hook.prog_type)
    return inspector, out.ok, out.depth, out.log


def _verifier_lines(log: str) -> str:
    """The verifier's reason and last instructions, from a log bcc printed."""
    return diagnostics.verifier_lines(log)


class LoadedProgram(Loaded):
    """The composed program, compiled by bcc and loaded in a child process (the one compile of each
    load), its programs and maps held here by fd, and the record layout it emits."""

    def __init__(self, program: Program, composed: str | None = None) -> None:
        super().__init__()
        self.subject = program
        self.hook = HOOKS[program.hook]
        text = composed or program.compose()
        flags = compile_flags(program.cflags)
        self.prints = "#define PKTASSERT_PRINTK\n" in text
        # In a child process: LLVM ends the process that compiles a program its backend rejects.
        served = compile_check.serve(text, flags, self.hook.prog_type)
        self._served = served
        lines = compile_check.line_maps(text, served.outcome.log)
        if not served.outcome.ok:
            raise ProgramError(diagnostics.compile_failure(program.name, program.func, served.outcome.log, lines,
                                                           lambda: _stack_share(program, flags), self.hook.ctx))
        if self.hook.entry not in served.functions:
            log, err = served.refused.get(self.hook.entry, ("", 0))
            served.close()
            sources = {f: "\n".join(body) for f, _, body in compile_check.regions(text.splitlines())}
            raise ProgramError(f"the verifier rejected {program.func}() from {program.name}: "
                               + diagnostics.verifier_message(log, err, program.name, lines, sources))
        self.fd = served.functions[self.hook.entry]
        self._tables = {name: _table(name, *entry) for name, entry in served.tables.items()}
        leaf = self._tables["pktassert_slots"].Leaf  # struct pktassert_record as bcc describes it
        self.record_type = leaf._type_ if issubclass(leaf, ctypes.Array) else leaf

    def our_map_fd(self, name: str) -> int:
        return self._served.tables[name][0]

    def bare_fd(self) -> int:
        return self._served.functions[BARE_ENTRY]

    def program_fd(self, func: str) -> int:
        """A function of the filter's source loaded as its own program (for program arrays)."""
        if func.startswith(RESERVED):
            raise ProgramError(f"{func!r} is pktassert's, not a function of {self.subject.name}.")
        if func in self._served.functions:
            return self._served.functions[func]
        refused = self._served.refused.get(func)
        why = _verifier_lines(refused[0]) if refused else "no such function"
        raise ProgramError(f"cannot load {func}() of {self.subject.name} for a program array: "
                           f"{why}. Fix: name a function `int {func}({self.hook.ctx}ctx)` "
                           f"defined (not static) in the filter's source.")

    def map_fds(self) -> dict[str, int]:
        return {name: self._served.tables[name][0] for name in self._table_names()}

    def code(self, func: str) -> bytes:
        """``func``'s instructions as bcc compiled them (before the kernel's rewrites)."""
        return self._served.code[func]

    def codes(self) -> dict[str, bytes]:
        """Every function's instructions as bcc compiled them, by name."""
        return dict(self._served.code)

    def _table_names(self) -> list[str]:
        return [n for n in self._served.tables if not n.startswith(RESERVED)]

    def state_maps(self) -> dict[str, object]:
        """The filter's own maps (not the inspector's) by name, as tables over their fds."""
        return {n: self._tables[n] for n in self._table_names()}

    def _close(self) -> None:
        self._served.close()


def _table(name: str, fd: int, key_desc: str, leaf_desc: str) -> FdTable:
    """A map as a table over its fd, its key and value types as bcc described them (bcc's own decoder;
    a queue or stack has no key)."""
    from bcc import BPF  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    key = BPF._decode_table_type(json.loads(key_desc)) if key_desc else ctypes.c_uint8 * 0
    leaf = BPF._decode_table_type(json.loads(leaf_desc)) if leaf_desc else ctypes.c_uint8 * 0
    return FdTable(name, fd, key, leaf)
