"""Whether a composed source compiles, asked of a fresh Python process first.

Why: when LLVM's BPF backend rejects a program (a stack over 512 bytes, a memcpy of unknown
length), LLVMContext::diagnose calls exit(1) in the process that compiles, and bcc installs no
handler: pytest (or an xdist worker) would end with no message. A source known to compile is
recorded on disk, so each distinct source is checked once per machine, not once per run.

Run as a script (``python -P compile_check.py``, a request as JSON on stdin) it is the checker:
it imports only the standard library and bcc, so it starts in ~0.05 s (``-m pktassert.bpf...``
would import pktassert, scapy among it: ~0.5 s more per check).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import difflib
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "bpf"  # pktassert.bpf's C headers, found without importing pktassert
RECORD_VERSION = 1      # of the record's format and of what its key covers
TIMEOUT = 600           # seconds; bcc compiles in ~2 s
DEBUG_PREPROCESSOR = 0x4  # bcc prints the source as it rewrote it: what LLVM's line numbers count
LOG_STATS = 4           # BPF_LOG_STATS: the verifier's "stack depth" line, without its trace
RESULT = "pktassert-compile-check:"  # marks the checker's result line (bcc also writes to stdout)
_LINE = re.compile(r'#line (\d+) "(.*)"$')
_QUOTED_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.MULTILINE)


@dataclasses.dataclass
class Outcome:
    ok: bool
    log: str = ""           # what clang, LLVM and bcc printed (when not ok)
    lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # see line_maps()
    depth: int | None = None  # the verifier's stack depth of the function loaded, if asked
    cached: bool = False


def records() -> tuple[Path, Path]:
    """The build cache's root and the folder of records in it: one root, one cleanup
    (``pktassert-cleanup --cache``)."""
    from pktassert.build import (  # noqa: PLC0415 - run as a script, the checker imports only the standard library and bcc
        build_cache,  # here: the child process that compiles imports nothing of pktassert
        cache_dir,
    )

    root = build_cache.root()
    return root, cache_dir.subfolder(root, f"compiles-v{RECORD_VERSION}")


def check(text: str, cflags: Sequence[str]) -> Outcome:
    """Compile ``text`` in a child process, unless a record says it compiles on this machine."""
    from pktassert.build import cache_dir  # noqa: PLC0415 - as above: the checker process imports nothing of pktassert

    name = f"{_key(text, cflags)}.json"
    root, folder = records()
    try:
        return Outcome(True, lines=json.loads(cache_dir.read(folder, name) or b"")["lines"], cached=True)
    except (ValueError, KeyError, TypeError):
        pass  # not recorded (or unreadable): check
    out = _finish(_start({"text": text, "cflags": list(cflags), "debug": DEBUG_PREPROCESSOR}))
    out.lines = line_maps(text, out.log)
    if out.ok:
        with contextlib.suppress(OSError):  # a cache that cannot be written (read-only, full): checked each run
            cache_dir.write(root, folder, name, json.dumps({"lines": out.lines}).encode())
    return out


def stack_depths(probe: str, alone: str, cflags: Sequence[str], func: str, entry: str,
                 prog_type: int) -> tuple[int | None, Outcome]:
    """The stack depth the verifier finds for ``probe`` (the inspector, entry ``entry``, with a trivial
    filter), and the outcome of compiling the filter ``alone`` and loading ``func`` from it, as programs
    of ``prog_type``; both at once."""
    a = _start({"text": probe, "cflags": list(cflags), "load": entry, "prog_type": prog_type})
    b = _start({"text": alone, "cflags": list(cflags), "load": func, "prog_type": prog_type})
    return _finish(a).depth, _finish(b)


def _start(request: dict) -> subprocess.Popen:
    """The checker, started on ``request`` (given whole now, so that two can compile at once)."""
    child = subprocess.Popen([sys.executable, "-P", str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died first: _finish() reports what it said
        child.stdin.write(json.dumps(request).encode())
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()
    child.stdin = None  # written and closed: communicate() must not flush it again
    return child


def _finish(child: subprocess.Popen) -> Outcome:
    try:
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return Outcome(False, f"error: the compile did not finish in {TIMEOUT} s")
    log = err.decode(errors="replace")
    results = [ln[len(RESULT):] for ln in out.decode(errors="replace").splitlines() if ln.startswith(RESULT)]
    if child.returncode != 0 or not results:
        return Outcome(False, log or f"error: the compiler exited with status {child.returncode} and said nothing")
    return Outcome(True, log, depth=json.loads(results[-1]).get("depth"))


def _key(text: str, cflags: Sequence[str]) -> str:
    """What decides whether a source compiles: the text, the flags, the headers it includes in quotes
    (ours and the user's), bcc (and so its LLVM), and the kernel headers bcc compiles against."""
    h = hashlib.sha256()
    for part in (str(RECORD_VERSION), text, json.dumps(list(cflags)), *_toolchain(), *_included(text, cflags)):
        h.update(part.encode(errors="surrogateescape") + b"\0")
    return h.hexdigest()


@functools.cache
def _toolchain() -> tuple[str, ...]:
    import bcc  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    release = platform.release()
    headers = [os.path.realpath(f"/lib/modules/{release}/{d}") for d in ("build", "source")]
    return (getattr(bcc, "__version__", "?"), release, *headers)


def _included(text: str, cflags: Sequence[str], limit: int = 64) -> list[str]:
    """The contents of the files ``#include "..."`` names, found as clang would (-I dirs), recursively."""
    dirs = [HERE, *(Path(f[2:] or nxt) for f, nxt in zip(cflags, [*cflags[1:], ""]) if f.startswith("-I"))]
    seen: dict[Path, str] = {}
    todo = [text]
    while todo and len(seen) < limit:
        for name in _QUOTED_INCLUDE.findall(todo.pop()):
            found = next((d / name for d in dirs if (d / name).is_file()), None)
            if found is not None and found not in seen:
                seen[found] = found.read_text(errors="replace")
                todo.append(seen[found])
    return [f"{p}\0{c}" for p, c in sorted(seen.items())]


def line_maps(composed: str, log: str) -> dict[str, list[int]]:
    """For each file a ``#line`` directive names: the line of the composed source (as the user
    wrote it) that each line of bcc's rewritten text comes from, 0 for lines bcc added.

    bcc rewrites the source before LLVM compiles it, adding a line before most function definitions
    (an attribute); LLVM's and the verifier's line numbers count the rewritten lines, so they run
    ahead of the user's by one per function above. The rewritten text is in ``log`` when compiled
    with DEBUG_PREPROCESSOR; without it (the compile failed before), no map."""
    lines = log.splitlines()
    try:
        start = lines.index("#if defined(BPF_LICENSE)")  # bcc's first line of the rewritten text
        end = len(lines) - 1 - lines[::-1].index("#include <bcc/footer.h>")  # and its last
    except ValueError:
        return {}
    maps: dict[str, list[int]] = {}
    for (name, first, orig), (name2, _, rewritten) in zip(regions(composed.splitlines()),
                                                         regions(lines[start:end])):
        if name != name2 or name in maps:
            continue
        where = [0] * len(rewritten)
        matcher = difflib.SequenceMatcher(None, orig, rewritten, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):  # same lines, or each rewritten in place
                where[j1:j2] = range(first + i1, first + i2)
        maps[name] = where
    return maps


def regions(lines: list[str]) -> list[tuple[str, int, list[str]]]:
    """(file, first line number, lines) for each run of lines after a ``#line`` directive."""
    out: list[tuple[str, int, list[str]]] = []
    for ln in lines:
        m = _LINE.match(ln)
        if m:
            out.append((m.group(2), int(m.group(1)), []))
        elif out:
            out[-1][2].append(ln)
    return out


# The checker (the child process).

def _stack_depth(bpf: object, func: str, prog_type: int) -> int | None:
    from bcc import lib  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    name = func.encode()
    m = bpf.module  # type: ignore[attr-defined]
    if not lib.bpf_function_start(m, name):
        return None
    buf = ctypes.create_string_buffer(1 << 16)
    fd = lib.bcc_func_load(m, prog_type, name, lib.bpf_function_start(m, name), lib.bpf_function_size(m, name),
                           lib.bpf_module_license(m), lib.bpf_module_kern_version(m), LOG_STATS, buf, len(buf),
                           None, -1)
    if fd >= 0:
        os.close(fd)
    found = re.search(rb"stack depth (\d+)", buf.value)
    return int(found.group(1)) if found else None


def main() -> int:
    request = json.load(sys.stdin)
    from bcc import BPF  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    try:
        bpf = BPF(text=request["text"].encode(), cflags=request["cflags"], debug=request.get("debug", 0))
    except Exception:  # noqa: BLE001  (bcc raises plain Exception; clang's words are on stderr already)
        return 2
    result = {"depth": _stack_depth(bpf, request["load"], request["prog_type"])} if request.get("load") else {}
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
