"""Malformed BPF objects for tests/test_object_fuzz.py: seeded mutants of real objects, and the driver
that loads them in a child process (run as a script), one JSON line per mutant.

The mutants are made with a parser of our own (a few lines, below), not pktassert's: the code under
test must not decide where the damage goes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import resource
import struct
import sys
import time
import traceback

# Values that break parsers: zero, one, off by a little, sign bits, all ones, the file's size.
_WORDS = (0, 1, 3, 7, 8, 12, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF)
_QUADS = (*_WORDS, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    header: int  # where its header is in the file
    offset: int
    size: int


def sections(data: bytes) -> list[Section]:
    """The sections of a well-formed little-endian ELF64 object (the originals only)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strings = heads[shstrndx][4]
    out = []
    for i, h in enumerate(heads):
        name = data[strings + h[0]:data.index(b"\0", strings + h[0])].decode()
        out.append(Section(name, shoff + i * shentsize, h[4], h[5]))
    return out


def section(data: bytes, name: str) -> Section:
    return next(s for s in sections(data) if s.name == name)


def put(data: bytearray, at: int, fmt: str, value: int) -> None:
    if 0 <= at and at + struct.calcsize(fmt) <= len(data):
        struct.pack_into(fmt, data, at, value & ((1 << (8 * struct.calcsize(fmt))) - 1))


def _value(rng: random.Random, old: int, quad: bool) -> int:
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(_QUADS if quad else _WORDS)
    if pick < 0.8:
        return old + rng.choice((-16, -8, -4, -1, 1, 4, 8, 16, 4096))
    return rng.getrandbits(64 if quad else 32)


def _flip(rng: random.Random, data: bytearray, lo: int, hi: int, n: int) -> None:
    for _ in range(n):
        if hi > lo:
            data[rng.randrange(lo, hi)] ^= rng.randrange(1, 256)


def _fields(rng: random.Random, data: bytearray, base: int, layout: list[tuple[int, str]], n: int) -> None:
    for _ in range(n):
        off, fmt = rng.choice(layout)
        old = struct.unpack_from(fmt, data, base + off)[0] if base + off + struct.calcsize(fmt) <= len(data) else 0
        put(data, base + off, fmt, _value(rng, old, fmt == "<Q"))


_SHDR = [(0, "<I"), (4, "<I"), (8, "<Q"), (0x18, "<Q"), (0x20, "<Q"), (0x28, "<I"), (0x2C, "<I"), (0x30, "<Q"),
         (0x38, "<Q")]
_EHDR = [(0x10, "<H"), (0x12, "<H"), (0x28, "<Q"), (0x34, "<H"), (0x3A, "<H"), (0x3C, "<H"), (0x3E, "<H")]
_BTF_HDR = [(4, "<I"), (8, "<I"), (12, "<I"), (16, "<I"), (20, "<I")]
_EXT_HDR = [(4, "<I"), (8, "<I"), (12, "<I"), (16, "<I"), (20, "<I"), (24, "<I"), (28, "<I")]
_SYM = [(0, "<I"), (4, "<B"), (6, "<H"), (8, "<Q"), (16, "<Q")]
_REL = [(0, "<Q"), (8, "<Q")]


def _within(rng: random.Random, data: bytearray, sec: Section, header: list[tuple[int, str]], words: list[int],
            stride: int, record: list[tuple[int, str]]) -> None:
    """Damage inside one section: its header's fields, the words that say how much follows (``words``:
    BTF's type infos, BTF.ext's record sizes and counts), its records' fields, or bytes anywhere in it."""
    pick = rng.random()
    if pick < 0.3 and header:
        _fields(rng, data, sec.offset, header, rng.randint(1, 2))
    elif pick < 0.6 and words:
        for at in rng.sample(words, min(len(words), rng.randint(1, 2))):
            put(data, at, "<I", _value(rng, struct.unpack_from("<I", data, at)[0], False))
    elif pick < 0.8 and record and sec.size >= stride:
        _fields(rng, data, sec.offset + stride * rng.randrange(sec.size // stride), record, rng.randint(1, 2))
    else:
        _flip(rng, data, sec.offset, sec.offset + sec.size, rng.randint(1, 6))


# Bytes after a BTF type's 12-byte header, by kind: (fixed, per member)
_BTF_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
              17: (4, 0), 19: (0, 12)}


def btf_types(data: bytes, sec: Section) -> list[int]:
    """Where each BTF type starts in the file: type [1] first."""
    hdr_len, type_off, type_len = struct.unpack_from("<III", data, sec.offset + 4)
    pos, end, out = sec.offset + hdr_len + type_off, sec.offset + hdr_len + type_off + type_len, []
    while pos < end:
        out.append(pos)
        info = struct.unpack_from("<I", data, pos + 4)[0]
        fixed, each = _BTF_EXTRA.get((info >> 24) & 0x1F, (0, 0))
        pos += 12 + fixed + (info & 0xFFFF) * each
    return out


def btf_words(data: bytes, sec: Section) -> list[int]:
    """Where each BTF type's info and size-or-type words are in the file."""
    return [at for pos in btf_types(data, sec) for at in (pos + 4, pos + 8)]


def ext_words(data: bytes, sec: Section) -> list[int]:
    """Where BTF.ext's record sizes and each group's record count are in the file."""
    hdr_len = struct.unpack_from("<I", data, sec.offset + 4)[0]
    out = []
    for field in (8, 16, 24) if hdr_len >= 32 else (8, 16):
        off, length = struct.unpack_from("<II", data, sec.offset + field)
        start = sec.offset + hdr_len + off
        if not length:
            continue
        rec_size, pos = struct.unpack_from("<I", data, start)[0], start + 4
        out.append(start)
        while pos < start + length:
            out.append(pos + 4)
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0] * rec_size
    return out


KINDS = ("truncate", "flip", "elf header", "section header", ".BTF", ".BTF.ext", ".symtab", ".strtab", ".rel")


def mutate(rng: random.Random, original: bytes) -> tuple[str, bytes]:
    """One mutant of ``original`` and the kind of damage done."""
    data, secs = bytearray(original), sections(original)
    kind = rng.choice(KINDS)
    named = {s.name: s for s in secs}
    if kind == "truncate":
        return kind, bytes(data[:rng.randrange(len(data))])
    if kind == "flip":
        _flip(rng, data, 0, len(data), rng.randint(1, 16))
    elif kind == "elf header":
        _fields(rng, data, 0, _EHDR, rng.randint(1, 2))
    elif kind == "section header":
        _fields(rng, data, rng.choice(secs[1:]).header, _SHDR, rng.randint(1, 2))
    elif kind == ".BTF":
        btf = named[".BTF"]
        _within(rng, data, btf, _BTF_HDR, btf_words(original, btf), 12, [(0, "<I"), (4, "<I"), (8, "<I")])
    elif kind == ".BTF.ext":
        ext = named[".BTF.ext"]
        _within(rng, data, ext, _EXT_HDR, ext_words(original, ext), 4, [(0, "<I")])
    elif kind == ".symtab":
        _within(rng, data, named[".symtab"], [], [], 24, _SYM)
    elif kind == ".strtab":
        _within(rng, data, named[".strtab"], [], [], 1, [])
    else:
        rels = [s for s in secs if s.name.startswith(".rel")]
        _within(rng, data, rng.choice(rels), [], [], 16, _REL)
    return kind, bytes(data)


# The driver (a child process: python tests/object_fuzz.py < manifest). Each mutant: loaded, or one
# PktassertError, or anything else (a raw traceback); a crash or hang of this process is seen by the parent.

def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (Linux 4.0)


FRAME = bytes.fromhex("02000000000202000000000108004500002800010000400600007f0000017f000001"
                      "04d2005000000000000000005002200000000000")  # Ether/IPv4/TCP to port 80


def _one(case: dict) -> dict:
    from pktassert import ObjectFile
    from pktassert.errors import PktassertError

    subject = ObjectFile(case["path"], case["func"], hook=case["hook"], direction=case.get("direction"))
    try:
        loaded = subject.load()
    except PktassertError as e:
        return {"outcome": "error", "message": str(e), "type": type(e).__name__}
    except BaseException as e:  # noqa: BLE001  (what we count: anything else is a raw traceback)
        return {"outcome": "traceback", "message": "".join(traceback.format_exception(e))[-3000:],
                "type": type(e).__name__}
    try:
        verdict = loaded.runner.run(FRAME).retval  # the unit tier: one verdict through the inspector
    except PktassertError as e:
        verdict = f"refused: {e}"
    finally:
        loaded.close()
    return {"outcome": "loaded", "verdict": verdict}


def main() -> int:
    cases = json.load(sys.stdin)
    start = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    import pktassert  # noqa: F401  (imported before the clock starts: a mutant's time is its load's)

    # A runaway mutant must not take the machine: this process may grow by 4 GiB at most.
    with open("/proc/self/status") as f:
        size = next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + (4 << 30), resource.RLIM_INFINITY))
    cpu = os.environ.get("OBJECT_FUZZ_CPU_SECONDS")
    if cpu:
        try:
            from pktassert.build import object_check
        except ImportError:  # a pktassert without one (the fuzzer shown failing on an older main)
            pass
        else:
            object_check.CPU_SECONDS = int(cpu)  # a looping mutant costs this much, not 10 s
    for k in range(start, len(cases)):
        print(json.dumps({"k": k, "started": True}), flush=True)
        _reset_peak()
        t0 = time.perf_counter()
        result = _one(cases[k])
        result.update(k=k, i=cases[k]["i"], seconds=time.perf_counter() - t0, peak_kib=_peak_kib(),
                      children_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
