"""Build a libbpf filter for loading: compile its source with clang (as its Makefile would), move its
entry into .text (pktassert/kernel/elf_entry.py) and link it with our inspector by libbpf's static linker (what
``bpftool gen object`` does). Every product is kept in the build cache (pktassert/build/build_cache.py).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from pktassert.bpf import DIR as HERE
from pktassert.build import build_cache, diagnostics, vmlinux_pch
from pktassert.errors import ProgramError
from pktassert.hooks.table import HOOKS
from pktassert.kernel import libbpf
from pktassert.kernel.elf_entry import entry_into_text, rename_extern
from pktassert.machine import host

CLANG = "clang"
# What `clang -O2 -g -target bpf -c` builds for a libbpf program (libbpf-bootstrap's flags).
BASE_FLAGS = ("-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wno-compare-distinct-pointer-types")
INSPECTOR_FILES = ("inspector_libbpf.c", "inspector.h", "inspector_tc.h", "stage.h", "parse.h", "record.h")
# The name the inspector is compiled to call, renamed to the entry's in its object (elf_entry.rename_extern):
# clang gives no BTF to an extern with a reserved name (_fix_port_egress), and the linker needs it.
ENTRY_PLACEHOLDER = "pktassert_filter_entry"


def clang() -> str:
    host.check("clang", "libbpf-dev")
    found = shutil.which(CLANG)
    assert found is not None  # the check above found it
    return found


def system_includes() -> list[str]:
    """The system's uapi and libbpf headers (Debian keeps asm/ under the multiarch folder)."""
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return [f"-I/usr/include/{arch}"]


def include_dirs() -> list[str]:
    """vmlinux.h of the running kernel (CO-RE), then the system's headers; never the kernel's internal
    headers (Debian's 6.1 tree here does not match the running kernel)."""
    found = vmlinux_dir()
    if not (found / "vmlinux.h").exists():  # the cache was emptied since (pktassert-cleanup --cache): made again
        vmlinux_dir.cache_clear()
        found = vmlinux_dir()
    return [f"-I{found}", *system_includes()]


@functools.cache
def vmlinux_dir() -> Path:
    """A folder with vmlinux.h made from /sys/kernel/btf/vmlinux, once per kernel per machine, by
    bpftool (subprocess): the documented way to make it; libbpf's btf_dump would call back into Python
    through a printf callback once per token of its 130,000 lines. The entry's folder holds only it
    (and its lock and digest), so ``-I`` it finds nothing else."""
    def make(out: Path) -> None:
        host.check("bpftool")
        # In memory, then written by us: bpftool does not notice a full disk, we do (OSError).
        done = subprocess.run(["bpftool", "btf", "dump", "file", host.BTF, "format", "c"], capture_output=True)
        if done.returncode != 0:
            raise ProgramError(f"bpftool cannot write vmlinux.h from {host.BTF}: "
                               f"{done.stderr.decode(errors='replace')}")
        out.write_bytes(done.stdout)

    path, _ = build_cache.product(build_cache.kernel_btf_id(), "vmlinux.h", make, kind="headers")
    return path.parent


def _written_or(stderr: str, other: Exception) -> Exception:
    """A full disk as the OSError it is (the cache moves to a private one), else ``other``."""
    for code in (errno.ENOSPC, errno.EDQUOT):
        if os.strerror(code) in stderr:
            return OSError(code, os.strerror(code))
    return other


def compile_source(source: Path, cflags: tuple[str, ...]) -> tuple[Path, bool]:
    """The object clang builds from ``source``; whether it came from the cache."""
    cc = clang()
    flags = (*BASE_FLAGS, *include_dirs(), *cflags)
    tools = (build_cache.clang_version(cc), build_cache.kernel_btf_id())
    key = build_cache.digest(build_cache.FORMAT, str(source.resolve()), *flags, *tools, libbpf.version())

    def run(out: Path, deps: Path) -> None:
        # -x c: whatever its name, the source is compiled as C (clang takes a .md or .txt for a linker input,
        # which -c leaves unused: no object, and no error).
        command = [cc, *flags, "-MD", "-MF", str(deps), "-x", "c", "-c", str(source), "-o", str(out)]
        header = vmlinux_dir() / "vmlinux.h"
        ours = (*BASE_FLAGS, *include_dirs())  # the PCH's flags: the same for every filter of this kernel
        pch = vmlinux_pch.pch(cc, ours, header, tools) if vmlinux_pch.applies(source, flags, header, cflags) else None
        done = None
        if pch is not None:
            done = subprocess.run([*command[:1], "-include-pch", str(pch), *command[1:]], capture_output=True, text=True)
        if done is None or done.returncode != 0:  # without the PCH: clang's words about the source as it is
            done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise _written_or(done.stderr, ProgramError(compile_failure(source, done.stderr)))
        if not out.exists():
            raise ProgramError(f"clang made no object from {source} ({done.stderr.strip() or 'it said nothing'}). "
                               f"Fix: a libbpf C source (SEC(\"xdp\") int f(struct xdp_md *ctx) ...).")

    return build_cache.compiled(source, key, run)


def compile_failure(source: Path, stderr: str) -> str:
    glibc = diagnostics.glibc_reached(str(source), stderr)
    if glibc:
        return glibc
    lines = stderr.splitlines()
    at = [i for i, ln in enumerate(lines) if ": error:" in ln or ": fatal error:" in ln]
    # each error with the #includes that led to it, its line and caret
    shown = [ln for i in at[:5] for ln in [*diagnostics.include_chain(lines, i), *lines[i:i + 3]]] or lines[-10:]
    fix = "Fix: correct the lines above."
    if any("file not found" in lines[i] for i in at):
        fix = ("Fix: libbpf programs include \"vmlinux.h\" (made here from the running kernel's BTF) and "
               "<bpf/bpf_helpers.h> (libbpf-dev); for your own headers add cflags=(\"-I<dir>\",).")
    more = f"\n... and {len(at) - 5} more errors" if len(at) > 5 else ""
    return f"{source} (a libbpf source) does not compile with clang:\n" + "\n".join(shown) + f"{more}\n{fix}"


def link(user_object: bytes, label: str, func: str, ctx: str, hook: str = "xdp",
         prints: bool = False) -> tuple[Path, bool]:
    """The user's object with ``func`` moved into .text, linked with our inspector (for ``hook``) calling it;
    ``prints``: the filter calls bpf_trace_printk, and the inspector marks each packet's lines."""
    ours, _ = _inspector(func, ctx, hook, prints)
    # The inspector's bytes, not its name (every build of it is called inspector.o): a changed inspector
    # (a pktassert upgrade) is linked anew, never served from an older link.
    key = build_cache.digest(build_cache.FORMAT, user_object, func, ours.read_bytes(), libbpf.version())

    def make(out: Path) -> None:  # out's folder is this build's own, in the cache: scratch files go there too
        inspector, moved = out.parent / "inspector.o", out.parent / "filter.o"
        inspector.write_bytes(rename_extern(ours.read_bytes(), ENTRY_PLACEHOLDER, func, "pktassert's inspector"))
        moved.write_bytes(entry_into_text(user_object, func, label))
        _static_link(out, [inspector, moved], label)

    return build_cache.product(key, "linked.o", make)


def _inspector(func: str, ctx: str, hook: str, prints: bool) -> tuple[Path, bool]:
    """Our inspector compiled to call ``ENTRY_PLACEHOLDER(ctx)`` (``link`` renames it ``func``): one object per
    argument type and hook, whatever the filter and its entry's name."""
    flags = [*BASE_FLAGS, *system_includes(), f"-I{HERE}", f"-DPKTASSERT_FILTER={ENTRY_PLACEHOLDER}",
             f"-DPKTASSERT_CTX={ctx}",
             *([f"-D{HOOKS[hook].define}"] if HOOKS[hook].define else []), *(["-DPKTASSERT_PRINTK"] if prints else [])]
    key = build_cache.digest(build_cache.FORMAT, *flags, *[(HERE / f).read_bytes() for f in INSPECTOR_FILES],
                             build_cache.clang_version(clang()))

    def make(out: Path) -> None:
        done = subprocess.run([clang(), *flags, "-c", str(HERE / "inspector_libbpf.c"), "-o", str(out)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            failed = ProgramError(f"pktassert's inspector does not compile for {func}({ctx}):\n{done.stderr}")
            raise _written_or(done.stderr, failed)

    return build_cache.product(key, "inspector.o", make)


def _static_link(out: Path, inputs: list[Path], label: str) -> None:
    lib = libbpf.lib()

    def why(said: libbpf.Said, rc: int) -> str:  # libbpf names our scratch files: the user knows the label
        text = said.why(-rc if rc < 0 else rc)
        for f in inputs:
            text = text.replace(str(f), "pktassert's inspector" if f.stem == "inspector" else label)
        return text or "no reason given"

    with libbpf.messages(debug=True) as said:
        linker = lib.bpf_linker__new(str(out).encode(), None)
        if not linker:
            raise ProgramError(f"libbpf's linker cannot start: {why(said, libbpf.error_of(linker))}")
        try:
            for f in inputs:
                rc = lib.bpf_linker__add_file(linker, str(f).encode(), None)
                if rc != 0:
                    raise ProgramError(f"{label} cannot be linked with pktassert's inspector: {why(said, rc)}. Fix: "
                                       f"rebuild it with clang -O2 -g -target bpf -c (a BPF object with BTF).")
            rc = lib.bpf_linker__finalize(linker)
            if rc != 0:
                raise ProgramError(f"{label}: libbpf's linker failed: {why(said, rc)}")
        finally:
            lib.bpf_linker__free(linker)
