"""Malformed captures never crash or hang inject.pcap() (issue 20, item 4): each gives its frames or one
clear InjectError that names the file, in bounded time.

The fuzzer: seeded mutants of real captures (tshark's editcap writes them from examples/captures/
portscan.pcap: pcap in µs and ns, pcapng with comments, a second section, gzip; big-endian by our own
byte swap), truncated, bytes flipped in file headers, records and blocks, lengths and options made
wrong, blocks dropped, doubled or retyped. Each is read by pktassert.frames.pcap.read in a child process (this
file run as a script), so a hang is seen and counted, not waited out. More mutants:
PKTASSERT_PCAP_FUZZ_MUTANTS=5000 pytest tests/test_pcap_fuzz.py -s
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
CAPTURE = HERE.parent / "examples/captures/portscan.pcap"
SEED = 20
COUNT = int(os.environ.get("PKTASSERT_PCAP_FUZZ_MUTANTS", "500"))
QUIET_FOR = 10  # seconds one mutant may take before the reader counts as hung (a whole capture takes ms)
SHB, IDB, EPB, SPB, OPB = 0x0A0D0D0A, 1, 6, 3, 2
TSHARK_ROOT_NOTE = 'Running as user "root" and group "root". This could be dangerous.'
ODD = (0, 1, 3, 4, 11, 12, 13, 15, 16, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF)


def _editcap(*args: str) -> None:
    subprocess.run(["editcap", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """Real captures, written by Wireshark's editcap (the first 30 frames, so damage lands on structure)."""
    d = tmp_path_factory.mktemp("originals")
    _editcap("-F", "pcap", "-r", str(CAPTURE), str(d / "us.pcap"), "1-30")
    _editcap("-F", "nsecpcap", str(d / "us.pcap"), str(d / "ns.pcap"))
    _editcap("-F", "pcapng", "-a", "1:first frame", "-a", "3:a comment of some length", str(d / "us.pcap"), str(d / "a.pcapng"))
    ng = (d / "a.pcapng").read_bytes()
    us = (d / "us.pcap").read_bytes()
    return {"pcap": us, "pcap_ns": (d / "ns.pcap").read_bytes(), "pcap_be": _big_endian(us), "pcapng": ng,
            "pcapng_2sections": ng + ng, "pcapng_gz": gzip.compress(ng), "pcapng_evidence": _evidence(us, d)}


def _evidence(pcap: bytes, where: Path) -> bytes:
    """The frames as pktassert's evidence writer writes them: named interfaces, a comment and a verdict option each."""
    from pktassert.reports import evidence

    w = evidence._Writer(str(where / "evidence.pcapng"))
    for n, (at, size) in enumerate(_pcap_records(pcap)):
        w.packet(pcap[at + 16:at + size], 0, 1.5e9 + n / 1e4, f"packet #{n}; verdict DROP (live tier)", (2, 1))
    w.f.close()
    return (where / "evidence.pcapng").read_bytes()


# Our own walk of the formats (a few lines): the code under test is not used to make its mutants.

def _big_endian(data: bytes) -> bytes:
    """A little-endian pcap byte-swapped to big-endian, as a big-endian machine would have written it."""
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data)))
    for at, size in _pcap_records(data):
        out += struct.pack(">IIII", *struct.unpack_from("<IIII", data, at)) + data[at + 16:at + size]
    return bytes(out)


def _pcap_records(data: bytes, end: str = "<") -> list[tuple[int, int]]:
    out, at = [], 24
    while at + 16 <= len(data):
        size = 16 + struct.unpack_from(end + "I", data, at + 8)[0]
        out.append((at, size))
        at += size
    return out


def _blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, total length) of each pcapng block (little-endian files only: editcap's)."""
    out, at = [], 0
    while at + 12 <= len(data):
        kind, size = struct.unpack_from("<II", data, at)
        out.append((at, kind, size))
        at += size
    return out


def _options_at(data: bytes, at: int, kind: int) -> int:
    """Where a block's options start (its fixed fields skipped)."""
    if kind == SHB:
        return at + 24
    if kind == IDB:
        return at + 16
    if kind == EPB:
        caplen = struct.unpack_from("<I", data, at + 20)[0]
        return at + 28 + (caplen + 3) // 4 * 4
    return at + 8


def _put(data: bytearray, at: int, fmt: str, value: int) -> None:
    if 0 <= at and at + struct.calcsize(fmt) <= len(data):
        struct.pack_into(fmt, data, at, value & ((1 << 8 * struct.calcsize(fmt)) - 1))


def _flip(rng: random.Random, data: bytearray, start: int, end: int) -> None:
    for _ in range(rng.randint(1, 4)):
        if end > start:
            data[rng.randrange(start, min(end, len(data)))] ^= 1 << rng.randrange(8)


def mutate(rng: random.Random, name: str, original: bytes) -> tuple[str, bytes]:
    """One mutant of ``original`` and the kind of damage done."""
    if name.endswith("_gz"):
        kind, inner = mutate(rng, "pcapng", gzip.decompress(original))
        packed = bytearray(gzip.compress(inner))
        if rng.random() < 0.3:  # the compression itself damaged
            kind, packed = "gzip damaged", packed[:rng.randrange(len(packed))] if rng.random() < 0.5 else packed
            _flip(rng, packed, 10, len(packed))
        return "gz: " + kind, bytes(packed)
    data = bytearray(original)
    ng, end = name.startswith("pcapng"), ">" if name == "pcap_be" else "<"
    units = _blocks(original) if ng else [(at, 0, size) for at, size in _pcap_records(original, end)]
    at, kind_of, size = rng.choice(units[1:] if ng else units)
    kind = rng.choice(["truncated", "file header flipped", "record flipped", "bad length", "bad length",
                       "bytes inserted", "record dropped", "record doubled"]
                      + (["bad option", "option retyped", "block retyped", "bad interface", "bad tsresol"] if ng else []))
    if kind == "truncated":
        data = data[:rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(min(len(data), 200))]
    elif kind == "file header flipped":
        _flip(rng, data, 0, 24 if not ng else units[0][2])
    elif kind == "record flipped":
        _flip(rng, data, at, at + (16 if not ng else 28))
    elif kind == "bad length":
        value = rng.choice(ODD + (size - 1, size + 1, size + 4, size * 2))
        if ng:
            where = rng.choice([at + 4, at + size - 4] + ([at + 20, at + 24] if kind_of == EPB else []) + [units[0][0] + 4])
        else:
            where = rng.choice([at + 8, at + 12, 16])  # caplen, the frame's own length, the snaplen
        _put(data, where, end + "I", value)
    elif kind == "bytes inserted":
        data[at:at] = rng.randbytes(rng.choice([1, 3, 4, 12, 16, 64]))
    elif kind == "record dropped":
        del data[at:at + size]
    elif kind == "record doubled":
        data[at:at] = data[at:at + size]
    elif kind == "bad option":
        first, kind_of, size = rng.choice([u for u in units if u[1] in (SHB, IDB, EPB)])
        opt = _options_at(bytes(data), first, kind_of)
        _put(data, opt + rng.choice([0, 2]), "<H", rng.choice(ODD + (9, 255, 256)))
    elif kind == "option retyped":  # a block's first option said to be another (flags, hash, tsresol, process, ...)
        first, kind_of, size = rng.choice([u for u in units if u[1] in (SHB, IDB, EPB)])
        opt = _options_at(bytes(data), first, kind_of)
        _put(data, opt, "<H", rng.choice([1, 2, 3, 4, 7, 9, 10, 11, 12, 0x8001, 0x8003, 2988]))
    elif kind == "block retyped":  # to a packet block, a new section, statistics, secrets, Apple's process block...
        _put(data, at, "<I", rng.choice([SHB, IDB, OPB, SPB, EPB, 4, 5, 10, 0x80000001, 0, rng.getrandbits(32)]))
    elif kind == "bad interface":
        epbs = [u for u in units if u[1] == EPB]
        _put(data, rng.choice(epbs)[0] + 8, "<I", rng.choice([1, 2, 0xFFFF, 0xFFFFFFFF]))
    else:  # the IDB rebuilt with an if_tsresol option (code 9, one byte) of an odd value
        idb, _, idb_size = next(u for u in units if u[1] == IDB)
        opts = struct.pack("<HHB3xI", 9, 1, rng.choice([0, 1, 9, 19, 20, 64, 127, 0x80, 0x80 | 63, 0xFF]), 0)
        body = bytes(data[idb + 8:idb + 16]) + opts
        data[idb:idb + idb_size] = struct.pack("<II", IDB, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    return kind, bytes(data)


# The reader (a child process: python tests/test_pcap_fuzz.py < manifest): one JSON line per mutant.

def _one(path: str) -> dict:
    from pktassert.errors import PktassertError
    from pktassert.frames import pcap

    try:
        frames, times = pcap.read(path)
    except PktassertError as e:
        return {"outcome": "error", "message": str(e), "type": type(e).__name__}
    except BaseException as e:  # noqa: BLE001  (what we count: anything else is a raw traceback)
        return {"outcome": "traceback", "message": "".join(traceback.format_exception(e))[-3000:]}
    return {"outcome": "frames", "frames": len(frames), "digest": _digest(frames),
            "times finite": bool(np.isfinite(times).all())}


def _digest(frames: list[bytes]) -> str:
    return hashlib.sha256(b"".join(len(f).to_bytes(4, "little") + f for f in frames)).hexdigest()


def _wiretap(path: str, where: Path) -> tuple[str, int] | str:
    """The frames Wireshark's reader (editcap) gives, as (digest, count); or what it says is wrong."""
    out = where / "wiretap.pcapng"
    said = subprocess.run(["editcap", "-F", "pcapng", path, str(out)], capture_output=True, text=True)
    if "can't be written" in said.stderr:  # editcap's writer refuses a block it does not know; tshark's takes it
        said = subprocess.run(["tshark", "-r", path, "-F", "pcapng", "-w", str(out)], capture_output=True, text=True)
        said.stderr = said.stderr.replace(TSHARK_ROOT_NOTE, "")
    if said.returncode or said.stderr.strip():
        return said.stderr.strip() or f"editcap exited {said.returncode}"
    data = out.read_bytes()  # editcap's own pcapng: enhanced packet blocks, in this machine's byte order
    frames = [data[at + 28:at + 28 + struct.unpack_from("<I", data, at + 20)[0]]
              for at, kind, _ in _blocks(data) if kind == EPB]
    return _digest(frames), len(frames)


def main() -> int:
    cases = json.load(sys.stdin)
    for k in range(int(sys.argv[1]), len(cases)):
        print(json.dumps({"k": k, "started": True}), flush=True)
        t0 = time.perf_counter()
        result = _one(cases[k]["path"])
        print(json.dumps({**result, "k": k, "seconds": time.perf_counter() - t0}), flush=True)
    return 0


def fuzz(cases: list[dict]) -> dict[int, dict]:
    """Each case read by the reader; after a crash or a hang (the reader killed), started again after it."""
    results: dict[int, dict] = {}
    start = 0
    while start < len(cases):
        proc = subprocess.Popen([sys.executable, __file__, str(start)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(json.dumps(cases).encode())
        proc.stdin.close()
        current, buf, start = start, b"", len(cases)
        while True:
            if not select.select([proc.stdout], [], [], QUIET_FOR)[0]:
                os.killpg(proc.pid, signal.SIGKILL)  # the reader we started, and nothing else
                proc.wait()
                results[current] = {"outcome": "hang", "seconds": QUIET_FOR}
                start = current + 1
                break
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                rc = proc.wait()
                if current not in results:
                    results[current] = {"outcome": "crash", "status": rc, "stderr": proc.stderr.read()[-2000:].decode()}
                    start = current + 1
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                r = json.loads(line)
                current = r["k"]
                if not r.get("started"):
                    results[current] = r
        proc.stdout.close()
        proc.stderr.close()
    return results


def test_fuzz_malformed_captures(originals, tmp_path):
    names = list(originals)
    cases = []
    for i in range(len(names) + COUNT):
        name = names[i % len(names)]
        rng = random.Random(f"{SEED}-{i}")
        kind, data = ("original", originals[name]) if i < len(names) else mutate(rng, name, originals[name])
        path = tmp_path / f"mutant{i:04d}-{name}.{'pcapng' if 'pcapng' in name else 'pcap'}"
        path.write_bytes(data)
        cases.append({"i": i, "path": str(path), "kind": kind, "name": name})
    results = fuzz(cases)
    mutants = cases[len(names):]
    outcomes = collections.Counter(results[c["i"]]["outcome"] for c in mutants)
    worst = max(mutants, key=lambda c: results[c["i"]]["seconds"])
    report = {"mutants": len(mutants), "frames": outcomes["frames"], "clear errors": outcomes["error"],
              "raw tracebacks": outcomes["traceback"], "crashes": outcomes["crash"], "hangs": outcomes["hang"],
              "worst seconds": round(results[worst["i"]]["seconds"], 3), "slowest": worst["i"]}
    if os.environ.get("PKTASSERT_FUZZ_OUT"):  # every mutant's outcome, for a closer look
        Path(os.environ["PKTASSERT_FUZZ_OUT"]).write_text(json.dumps([{**c, **results[c["i"]]} for c in cases]))
    print(f"\npcap fuzz (seed {SEED}): {json.dumps(report)}")
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in mutants:
        by_kind[c["kind"]][results[c["i"]]["outcome"]] += 1
    print("by kind:", json.dumps(by_kind))
    for c in cases[:len(names)]:
        assert results[c["i"]] == {**results[c["i"]], "outcome": "frames", "frames": 30 * (1 + c["name"].endswith("2sections"))}
    bad = [(c["i"], c["kind"], results[c["i"]]) for c in mutants if results[c["i"]]["outcome"] not in ("frames", "error")]
    assert not bad, f"{len(bad)} mutants crashed, hung or gave a raw traceback ({report}); the first: " + \
        "\n".join(f"#{i} ({kind}): {json.dumps(r)[:1500]}" for i, kind, r in bad[:3])
    unclear = [(c["i"], results[c["i"]]["message"]) for c in mutants if results[c["i"]]["outcome"] == "error"
               and (Path(c["path"]).name not in results[c["i"]]["message"] or "Fix:" not in results[c["i"]]["message"])]
    assert not unclear, f"{len(unclear)} errors do not name the file and the fix; the first: {unclear[:3]}"
    # Frames given are the frames: Wireshark's reader takes the same file without a word, frame for frame.
    differ = [(c["i"], c["kind"], seen) for c in mutants if results[c["i"]]["outcome"] == "frames"
              and (seen := _wiretap(c["path"], tmp_path)) != (results[c["i"]]["digest"], results[c["i"]]["frames"])]
    assert not differ, f"{len(differ)} mutants gave frames Wireshark's reader does not; the first: {differ[:3]}"
    assert all(results[c["i"]]["times finite"] for c in mutants if results[c["i"]]["outcome"] == "frames")
    assert report["clear errors"] >= report["mutants"] // 2, report  # the mutants do damage: most are refused


if __name__ == "__main__":
    sys.exit(main())
