"""vmlinux.h precompiled (a clang PCH), for libbpf sources that begin by including it.

Why: vmlinux.h is ~2.8 MB of C (every type of the running kernel); clang parses it for each compile,
~0.4 s of a ~0.5 s compile of a small filter (measured here, clang 14: 0.53 s plain, 0.10 s with the
PCH, which takes 1.2 s to make once per kernel, flags and clang, in the build cache).

Used only where it cannot change what the source means: the source's first line (after comments) is
`#include "vmlinux.h"`, so nothing it defines could have changed how vmlinux.h reads (a
BPF_NO_PRESERVE_ACCESS_INDEX defined before it, say); and the vmlinux.h that include finds (the
source's folder first, then each -I folder, as clang looks) is pktassert's, byte for byte.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pktassert.build import build_cache

# Comments and blank space, then the include: nothing before it that the preprocessor acts on.
_LEADS_WITH_VMLINUX = re.compile(r'\A(?:\s+|//[^\n]*|/\*.*?\*/)*#[ \t]*include[ \t]*"vmlinux\.h"', re.S)


def applies(source: Path, flags: Sequence[str], ours: Path) -> bool:
    """Whether the PCH of ``ours`` (pktassert's vmlinux.h) may stand for ``source``'s include of it."""
    try:
        if not _LEADS_WITH_VMLINUX.match(source.read_text(errors="replace")):
            return False
    except OSError:
        return False  # clang says what is wrong with the source
    dirs = [source.parent, *(Path(f[2:] or nxt) for f, nxt in zip(flags, [*flags[1:], ""]) if f.startswith("-I"))]
    found = next((d / "vmlinux.h" for d in dirs if (d / "vmlinux.h").is_file()), None)
    if found is None:
        return False
    return found.resolve() == ours.resolve() or found.read_bytes() == ours.read_bytes()


def pch(cc: str, flags: Sequence[str], header: Path, key_parts: Sequence[str]) -> Path | None:
    """``header`` precompiled with ``flags`` (a PCH must be used with the flags it was made with), made
    once per key; None if clang cannot make it (the source is then compiled without)."""
    key = build_cache.digest(build_cache.FORMAT, "vmlinux.h.pch", *flags, *key_parts)

    def make(out: Path) -> None:
        done = subprocess.run([cc, *flags, "-x", "c-header", str(header), "-o", str(out)], capture_output=True)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(done.stderr.decode(errors="replace"))

    try:
        path, _ = build_cache.product(key, "vmlinux.h.pch", make, kind="headers")
    except RuntimeError:
        return None
    return path
