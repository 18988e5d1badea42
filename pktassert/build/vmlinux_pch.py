"""vmlinux.h precompiled (a clang PCH), for libbpf sources that begin by including it.

Why: vmlinux.h is ~2.8 MB of C (every type of the running kernel); clang parses it for each compile,
~0.4 s of a ~0.5 s compile of a small filter (measured here, clang 14: 0.53 s plain, 0.10 s with the
PCH, which takes 1.2 s to make once per kernel, flags and clang, in the build cache).

Used only where it cannot change what the source means: the source's first line (after comments) is
`#include "vmlinux.h"`, so nothing it defines could have changed how vmlinux.h reads (a
BPF_NO_PRESERVE_ACCESS_INDEX defined before it, say); the vmlinux.h that include finds (the
source's folder first, then each -I folder, as clang looks) is pktassert's, byte for byte; and the
filter's own cflags are only folders (-I), warnings (-W) and macros vmlinux.h does not test (-D, -U).
Then one PCH, made with pktassert's flags alone, serves every filter of the kernel (clang takes more
-I and -D beside a PCH; measured: a PCH per cflags cost 1.2 s and 15 MB for each -D variant).
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pktassert.build import build_cache

# Comments and blank space, then the include: nothing before it that the preprocessor acts on.
_LEADS_WITH_VMLINUX = re.compile(r'\A(?:\s+|//[^\n]*|/\*.*?\*/)*#[ \t]*include[ \t]*"vmlinux\.h"', re.S)
_CONDITION = re.compile(rb"^[ \t]*#[ \t]*(?:if|ifdef|ifndef|elif)\b(.*)$", re.M)
_NAME = re.compile(r"[A-Za-z_]\w*")


@functools.cache
def _tested(header: Path, stamp: tuple[int, int]) -> frozenset[str]:
    """The macro names ``header``'s conditionals test (vmlinux.h: its guard, BPF_NO_PRESERVE_ACCESS_INDEX);
    ``stamp`` (mtime, size) keys the cache: a header made again is read again."""
    return frozenset(n for m in _CONDITION.finditer(header.read_bytes()) for n in _NAME.findall(m.group(1).decode()))


def _harmless(cflags: Sequence[str], tested: frozenset[str]) -> bool:
    """Whether none of the filter's cflags could make ``header`` read otherwise than it did for the PCH."""
    args = iter(cflags)
    for flag in args:
        if flag in ("-I", "-D", "-U"):  # the value as the next argument
            flag += next(args, "")
        if flag.startswith(("-I", "-W")):
            continue
        name = _NAME.match(flag[2:]) if flag.startswith(("-D", "-U")) else None
        if name is None or name[0] in tested:
            return False
    return True


def applies(source: Path, flags: Sequence[str], ours: Path, cflags: Sequence[str] = ()) -> bool:
    """Whether the PCH of ``ours`` (pktassert's vmlinux.h) may stand for ``source``'s include of it, compiled
    with ``flags`` (all of them), of which ``cflags`` are the filter's own."""
    try:
        st = ours.stat()
        if not _harmless(cflags, _tested(ours, (st.st_mtime_ns, st.st_size))):
            return False
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
    """``header`` precompiled with ``flags`` (pktassert's own: clang checks them against the compile's),
    made once per key; None if clang cannot make it (the source is then compiled without)."""
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
