"""bcc compiles a user's composed source in a fresh Python process, loads it there, and hands the
programs and maps back as fds: the one compile of each load.

Why a child: when LLVM's BPF backend rejects a program (a stack over 512 bytes, a memcpy of unknown
length), LLVMContext::diagnose calls exit(1) in the process that compiles, and bcc installs no
handler: pytest (or an xdist worker) would end with no message. Why hand back fds rather than compile
again in-process once the child said it compiles (as pktassert did before): bcc's compile is most of a
load (~1-3 s, the kernel headers a source includes), and twice per edit is what a filter author waits for.

Run as a script (``python -P compile_check.py``, a request as JSON on stdin) it is the checker:
it imports only the standard library and bcc, so it starts in ~0.05 s (``-m pktassert.bpf...``
would import pktassert, scapy among it: ~0.5 s more per check).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import difflib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "bpf"  # pktassert.bpf's C headers, found without importing pktassert
TIMEOUT = 600           # seconds; bcc compiles in ~2 s
DEBUG_PREPROCESSOR = 0x4  # bcc prints the source as it rewrote it: what LLVM's line numbers count
LOG_STATS = 4           # BPF_LOG_STATS: the verifier's "stack depth" line, without its trace
RESULT = "pktassert-compile-check:"  # marks the checker's result line (bcc also writes to stdout)
VERIFIER_LOG_LEVEL = 1 | 4  # BPF_LOG_LEVEL1 (instructions, with source lines) | BPF_LOG_STATS ("processed ...")
VERIFIER_LOG_SIZE = (16 << 20) - 1  # since 6.4 the kernel keeps the END of a longer log, where the reason is
_FDS_PER_MESSAGE = 250  # SCM_MAX_FD is 253
_LINE = re.compile(r'#line (\d+) "(.*)"$')


@dataclasses.dataclass
class Outcome:
    ok: bool
    log: str = ""           # what clang, LLVM and bcc printed (when not ok)
    depth: int | None = None  # the verifier's stack depth of the function loaded, if asked


@dataclasses.dataclass
class Served:
    """What the child compiled and loaded, handed over as fds (the child has exited)."""

    outcome: Outcome
    tables: dict[str, tuple[int, str, str]] = dataclasses.field(default_factory=dict)  # name -> fd, key, leaf desc
    functions: dict[str, int] = dataclasses.field(default_factory=dict)      # name -> program fd
    refused: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)  # name -> verifier log, errno
    code: dict[str, bytes] = dataclasses.field(default_factory=dict)        # name -> instructions as compiled

    def close(self) -> None:
        for fd in [*(t[0] for t in self.tables.values()), *self.functions.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.tables.clear()
        self.functions.clear()


def serve(text: str, cflags: Sequence[str], prog_type: int) -> Served:
    """Compile ``text`` once, in a child process, and load every function of it as ``prog_type`` there;
    its maps and programs come back as fds (SCM_RIGHTS) with bcc's descriptions of each map's key and
    value. The only compile of a user's source: LLVM may end the process that compiles it, and then
    only the child ends, with what clang and LLVM said on its stderr."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        with theirs:
            child = _start({"text": text, "cflags": list(cflags), "debug": DEBUG_PREPROCESSOR,
                            "serve": {"fd": theirs.fileno(), "prog_type": prog_type}}, pass_fds=(theirs.fileno(),))
        out, result = _finish(child)
        served = Served(out)
        if not out.ok or result is None:
            return served
        ours.setblocking(False)  # the child has exited: everything it sent is queued here already
        fds: list[int] = []
        with contextlib.suppress(BlockingIOError):
            while len(fds) < result["fds"]:
                _, got, _, _ = socket.recv_fds(ours, 16, _FDS_PER_MESSAGE)
                if not got:
                    break
                fds += got
    if len(fds) != result["fds"]:
        for fd in fds:
            os.close(fd)
        return Served(Outcome(False, out.log + f"\nerror: the compiler's process handed over {len(fds)} of "
                                     f"{result['fds']} file descriptors"))
    served.tables = {t["name"]: (fds[t["fd"]], t["key"], t["leaf"]) for t in result["tables"]}
    served.functions = {name: fds[i] for name, i in result["functions"].items()}
    served.refused = {name: (r["log"], r["errno"]) for name, r in result["refused"].items()}
    served.code = {name: bytes.fromhex(c) for name, c in result["code"].items()}
    return served


def stack_depths(probe: str, alone: str, cflags: Sequence[str], func: str, entry: str,
                 prog_type: int) -> tuple[int | None, Outcome]:
    """The stack depth the verifier finds for ``probe`` (the inspector, entry ``entry``, with a trivial
    filter), and the outcome of compiling the filter ``alone`` and loading ``func`` from it, as programs
    of ``prog_type``; both at once."""
    a = _start({"text": probe, "cflags": list(cflags), "load": entry, "prog_type": prog_type})
    b = _start({"text": alone, "cflags": list(cflags), "load": func, "prog_type": prog_type})
    return _finish(a)[0].depth, _finish(b)[0]


def _start(request: dict, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """The checker, started on ``request`` (given whole now, so that two can compile at once)."""
    child = subprocess.Popen([sys.executable, "-P", str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds)
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died first: _finish() reports what it said
        child.stdin.write(json.dumps(request).encode())
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()
    child.stdin = None  # written and closed: communicate() must not flush it again
    return child


def _finish(child: subprocess.Popen) -> tuple[Outcome, dict | None]:
    """What the child said: the outcome, and its result line (None when it failed)."""
    try:
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return Outcome(False, f"error: the compile did not finish in {TIMEOUT} s"), None
    log = err.decode(errors="replace")
    results = [ln[len(RESULT):] for ln in out.decode(errors="replace").splitlines() if ln.startswith(RESULT)]
    if child.returncode != 0 or not results:
        return Outcome(False, log or f"error: the compiler exited with status {child.returncode} and said nothing"), None
    result = json.loads(results[-1])
    return Outcome(True, log, depth=result.get("depth")), result


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


def verifier_log(bpf: object, func: str, prog_type: int) -> tuple[str, int]:
    """Load ``func`` again with the verifier's log on: bcc's own load logs nothing for E2BIG and only
    prints its hint ("Program too large (N insns), at most 4096 insns"), which misleads."""
    from bcc import lib  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    m, name = bpf.module, func.encode()  # type: ignore[attr-defined]
    args = (m, prog_type, name, lib.bpf_function_start(m, name), lib.bpf_function_size(m, name),
            lib.bpf_module_license(m), lib.bpf_module_kern_version(m))
    log, err = "", 0
    for level in (VERIFIER_LOG_LEVEL, LOG_STATS):  # then the reason alone, if an older kernel kept the start of a long log
        buf = ctypes.create_string_buffer(VERIFIER_LOG_SIZE + 1)
        fd = lib.bcc_func_load(*args, level, buf, VERIFIER_LOG_SIZE, None, -1)
        err = ctypes.get_errno()
        if fd >= 0:
            os.close(fd)
        log = buf.value.decode(errors="replace")
        if "processed " in log or fd >= 0:
            break
    return log, err


def _serve(bpf: object, fd: int, prog_type: int) -> dict:
    """Hand the parent every map and every function (loaded as ``prog_type``) as fds over ``fd``."""
    from bcc import lib  # noqa: PLC0415 - as above

    m = bpf.module  # type: ignore[attr-defined]
    lib.bpf_num_tables.argtypes, lib.bpf_num_tables.restype = [ctypes.c_void_p], ctypes.c_size_t
    lib.bpf_table_name.argtypes, lib.bpf_table_name.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_char_p
    fds: list[int] = []
    tables: list[dict] = []
    functions: dict[str, int] = {}
    refused: dict[str, dict] = {}
    code: dict[str, str] = {}
    for i in range(lib.bpf_num_tables(m)):
        name = lib.bpf_table_name(m, i)
        tables.append({"name": name.decode(), "fd": len(fds), "key": (lib.bpf_table_key_desc(m, name) or b"").decode(),
                       "leaf": (lib.bpf_table_leaf_desc(m, name) or b"").decode()})
        fds.append(lib.bpf_table_fd(m, name))
    for i in range(lib.bpf_num_functions(m)):
        name = lib.bpf_function_name(m, i).decode()
        code[name] = bytes(bpf.dump_func(name.encode())).hex()  # type: ignore[attr-defined]  # as compiled, before the kernel's rewrites
        try:
            functions[name] = len(fds)
            fds.append(bpf.load_func(name.encode(), prog_type).fd)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001  (bcc raises plain Exception; the verifier's words come next)
            del functions[name]
            log, err = verifier_log(bpf, name, prog_type)
            refused[name] = {"log": log, "errno": err}
    sock = socket.socket(fileno=fd)
    for at in range(0, len(fds), _FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"f"], fds[at:at + _FDS_PER_MESSAGE])
    sock.close()
    return {"fds": len(fds), "tables": tables, "functions": functions, "refused": refused, "code": code}


def main() -> int:
    request = json.load(sys.stdin)
    from bcc import BPF  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

    try:
        bpf = BPF(text=request["text"].encode(), cflags=request["cflags"], debug=request.get("debug", 0))
    except Exception:  # noqa: BLE001  (bcc raises plain Exception; clang's words are on stderr already)
        return 2
    result = {"depth": _stack_depth(bpf, request["load"], request["prog_type"])} if request.get("load") else {}
    if request.get("serve"):
        result.update(_serve(bpf, request["serve"]["fd"], request["serve"]["prog_type"]))
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
