"""Malformed objects kept from crashing the run: their BTF checked before libbpf reads it, and every
step before the kernel load tried first in a forked child.

Why: pktassert reads a user's object with libbpf in its own process (opening it, linking it with our
inspector, reading its BTF), and libbpf 1.1 does not survive every malformed object: a BTF type id out
of range makes bpf_object__open_mem() read through a NULL pointer (SIGSEGV), and its static linker
crashes on others. What can be said precisely is said first (``before_libbpf``: what is wrong with the
BTF, which type); then the steps run in a child, under a CPU-time and a memory limit, where a crash, a
loop or runaway memory is one ProgramError naming the object; only a child that finished lets them run
here. Each object (with its entry and options) is tried once per process.

Why fork, not a fresh interpreter (as pktassert/build/compile_check.py does for bcc): the steps need pktassert,
libbpf and the subject already in memory; a fresh interpreter would import them again (~0.4 s per
object), a fork costs ~6 ms (measured: a new object's first load 57 ms, its next ones 38 ms). The
child runs only code already imported, writes one word to a pipe and leaves by os._exit: it never
returns into pytest.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import os
import resource
import select
import signal
import struct
import time
from collections.abc import Callable

from pktassert.build import cache_upkeep
from pktassert.kernel import btf_types as k
from pktassert.kernel.elf_entry import ElfObject, btf_ext_parts, malformed

CPU_SECONDS = 10          # of the child's own CPU: reading an object takes milliseconds; clang runs in its own process
TIMEOUT = 120.0           # seconds of wall time (clang compiling our inspector on a cold cache, a busy machine)
MEMORY = 1 << 30          # bytes the child may grow by
_verdicts: dict[str, str | None] = {}  # key -> None (the child finished) or what went wrong
# Bytes after a type's 12-byte header, by kind: (fixed, per member).
_EXTRA = {k.INT: (4, 0), k.ARRAY: (12, 0), k.STRUCT: (0, 12), k.UNION: (0, 12), k.ENUM: (0, 8), k.FUNC_PROTO: (0, 8),
          k.VAR: (4, 0), k.DATASEC: (0, 12), k.DECL_TAG: (4, 0), k.ENUM64: (0, 12)}
_NO_MEMBERS = {k.INT, k.PTR, k.ARRAY, k.FWD, k.TYPEDEF, k.VAR, k.FLOAT, k.DECL_TAG} | k.QUALIFIERS
_KIND_NAMES = {k.ARRAY: "an array", k.STRUCT: "a struct", k.UNION: "a union", k.VAR: "a variable", k.DATASEC: "a DATASEC"}


def check_btf(btf: bytes) -> tuple[int, int]:
    """The number of types (void among them) and bytes of strings of a raw .BTF section; ValueError
    saying what is wrong with it. libbpf 1.1 checks that types fit and strings end; not that a type id
    names a type (it then reads through a NULL pointer), that a name is a string, or that no type contains
    itself (whoever lays it out then loops). This checks all of it."""
    if len(btf) < 24 or struct.unpack_from("<HBB", btf) != (0xEB9F, 1, 0):
        raise ValueError("it does not start with a BTF header (version 1, little-endian)")
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<5I", btf, 4)
    if hdr_len < 24 or str_off + str_len > len(btf) - hdr_len or type_off + type_len > str_off or type_off % 4:
        raise ValueError(f"its header puts types at {type_off}+{type_len} and strings at {str_off}+{str_len}, in "
                         f"{len(btf)} bytes")
    strings = btf[hdr_len + str_off:hdr_len + str_off + str_len]
    if not strings or strings[0] or strings[-1]:
        raise ValueError("its strings do not start and end with a NUL")
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    names, refs, inside = [], [], []  # (type, string offset); (type, type id); (type, type id it holds by value)
    kinds, tid = [0], 0
    while pos < end:
        tid += 1
        name_off, info, size_or_type = struct.unpack_from("<3I", btf, pos) if pos + 12 <= end else (0, 0, 0)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, each = _EXTRA.get(kind, (0, 0))
        if pos + 12 + fixed + vlen * each > end:
            raise ValueError(f"type [{tid}] is cut off by the end of the types")
        if not k.INT <= kind <= k.ENUM64:
            raise ValueError(f"type [{tid}] is of kind {kind}, which BTF does not have")
        if vlen and kind in _NO_MEMBERS or kind == k.FUNC and vlen > 2 or kind == k.FWD and size_or_type:
            # what the kernel refuses; libbpf's linker too, saying nothing
            raise ValueError(f"type [{tid}] (kind {kind}) has {vlen} members and size or type {size_or_type}; its kind "
                             f"has no members{' and no type' if kind == k.FWD else ''}")
        held, other, member_names = _links(kind, size_or_type, struct.unpack_from(f"<{fixed // 4 + vlen * each // 4}I",
                                                                                   btf, pos + 12))
        kinds.append(kind)
        names += [(tid, off) for off in [name_off, *member_names]]
        refs += [(tid, r) for r in held + other]
        inside += [(tid, r) for r in held]
        pos += 12 + fixed + vlen * each
    bad_name = next(((t, off) for t, off in names if off >= len(strings) or not _text(strings, off)), None)
    if bad_name:
        raise ValueError(f"type [{bad_name[0]}] is named by string {bad_name[1]}, which is no UTF-8 text in its "
                         f"{len(strings)} bytes of strings")
    bad_ref = next(((t, r) for t, r in refs if r > tid), None)
    if bad_ref:
        raise ValueError(f"type [{bad_ref[0]}] refers to type [{bad_ref[1]}], and it has types [1] to [{tid}]")
    # void has no size: no array, member or variable is of it (a qualifier or typedef of void is C)
    void = next((t for t, r in inside if r == 0 and kinds[t] not in k.QUALIFIERS | {k.TYPEDEF}), None)
    if void:
        raise ValueError(f"type [{void}] ({_KIND_NAMES[kinds[void]]}) holds a value of type void")
    func = next((t for t, r in refs if kinds[t] == k.FUNC and kinds[r] != k.FUNC_PROTO), None)
    if func:
        raise ValueError(f"function [{func}] has no FUNC_PROTO for its type")
    looped = _cycle(tid, inside)
    if looped:
        raise ValueError(f"type [{looped}] contains itself")
    return tid + 1, len(strings)


def _text(strings: bytes, off: int) -> bool:
    try:
        strings[off:strings.index(0, off)].decode()
    except UnicodeDecodeError:
        return False
    return True


def _links(kind: int, size_or_type: int, words: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
    """What a type refers to: the type ids it holds by value, the other type ids it names (pointers,
    functions' types, an array's index), and the string offsets of its members' names."""
    if kind in (k.STRUCT, k.UNION):  # members: (name, type, offset)
        return list(words[1::3]), [], list(words[0::3])
    if kind == k.ARRAY:  # (element type, index type, count)
        return [words[0]], [words[1]], []
    if kind == k.DATASEC:  # (variable, offset, size)
        return list(words[0::3]), [], []
    if kind == k.FUNC_PROTO:  # returns size_or_type; parameters: (name, type)
        return [], [size_or_type, *words[1::2]], list(words[0::2])
    if kind in (k.ENUM, k.ENUM64):  # (name, value) or (name, low, high)
        return [], [], list(words[0::2 if kind == k.ENUM else 3])
    held = [size_or_type] if kind in k.QUALIFIERS | {k.TYPEDEF, k.VAR} else []
    return held, [size_or_type] if kind in (k.PTR, k.FUNC, k.DECL_TAG) else [], []


def _cycle(count: int, inside: list[tuple[int, int]]) -> int | None:
    """A type that contains itself (through typedefs, qualifiers, arrays, members), or None."""
    holds: list[list[int]] = [[] for _ in range(count + 1)]
    for t, r in inside:
        holds[t].append(r)
    state = [0] * (count + 1)  # 0: not seen, 1: on the path, 2: done
    for first in range(1, count + 1):
        stack = [(first, 0)]
        while stack:
            t, i = stack.pop()
            if i == 0:
                if state[t] == 2:
                    continue
                if state[t] == 1:
                    return t
                state[t] = 1
            if i < len(holds[t]):
                stack += [(t, i + 1), (holds[t][i], 0)]
            else:
                state[t] = 2
    return None


def before_libbpf(elf: ElfObject, label: str) -> None:
    """The object's .BTF and .BTF.ext checked, before libbpf reads them (it crashes on some bad BTF, and
    drops a bad .BTF.ext with only a warning)."""
    btf, ext = elf.index(".BTF"), elf.index(".BTF.ext")
    if btf is None:
        return
    try:
        types, strings = check_btf(bytes(elf.sections[btf].data))
    except ValueError as e:
        raise malformed(label, f"its .BTF section: {e}") from None
    if ext is not None:
        btf_ext_parts(elf.sections[ext].data, label, types, strings)


def key(*parts: object) -> str:
    """A digest of what the steps depend on (the object's bytes, its entry, its options)."""
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def tried(label: str, digest: str, steps: Callable[[], None]) -> None:
    """Run ``steps`` in a child unless already tried in this process; a ProgramError (naming ``label``) if it crashed,
    looped or ran out of memory. A Python exception in the child is not reported: the steps raise it
    again here, where it has its own type and traceback."""
    if digest not in _verdicts:
        _verdicts[digest] = _in_child(steps)
    what = _verdicts[digest]
    if what is not None:
        raise malformed(label, what)


def _in_child(steps: Callable[[], None]) -> str | None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of pytest's may run here, so every way out is os._exit
        try:
            os.close(read)
            faulthandler.disable()  # pytest's would print a Python traceback of a crash we report ourselves
            _limit()
            try:
                steps()
                word = b"done"
            except MemoryError:
                word = b"memory"
            except BaseException:  # noqa: BLE001  (raised again in the parent, with its traceback)
                word = b"raised"
            os.write(write, word)
        finally:
            os._exit(0)
    os.close(write)
    try:
        word, status = _wait(pid, read)
    finally:
        os.close(read)
    if word in (b"done", b"raised"):
        return None
    _sweep()  # a child killed while building leaves its temporaries in the build cache
    if word == b"memory":
        return f"reading it takes over {MEMORY >> 20} MiB of memory"
    if status is None:
        return f"reading it did not finish in {TIMEOUT:.0f} s"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return f"reading it took over {CPU_SECONDS} s of CPU (libbpf or pktassert looping on it)"
        return f"libbpf crashed ({signal.Signals(sig).name}) reading it"
    return f"reading it ended its process (exit status {os.WEXITSTATUS(status)})"


def _sweep() -> None:
    with contextlib.suppress(Exception):  # best effort: the next run's start sweeps them too
        cache_upkeep.leftovers()


def _limit() -> None:
    """The child's limits: CPU time (SIGXCPU, then SIGKILL) and address space (MemoryError, or NULL
    from malloc in libbpf, which it reports as ENOMEM)."""
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 1))
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = size + MEMORY
    if soft == resource.RLIM_INFINITY or want < soft:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def _wait(pid: int, read: int) -> tuple[bytes, int | None]:
    """What the child wrote and its wait status; status None: killed here after TIMEOUT."""
    deadline, word = time.monotonic() + TIMEOUT, b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
            return word, None
        chunk = os.read(read, 16)
        if not chunk:  # the child closed its end: it has left
            return word, _reap(pid)
        word += chunk


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): what it wrote is all we know
        return 0
