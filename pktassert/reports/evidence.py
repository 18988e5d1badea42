"""A test's packets as pcapng for Wireshark: every packet it injected, in send order, each with its
verdict in the standard EPB verdict option (as xdpdump writes it: Linux eBPF XDP or TC, the action
as a 64-bit value) and a comment saying which packet of which inject() call it was, each stage's
verdict and its fate; the frames that came out (TX, redirect, the unit tier's outputs) after the
packet they came from, on a second interface. Floods are bounded: the first and last packets and
every offender, and the first packet's comment says so.

Written under a temporary name beside the file (``.<name>.<random>.part``) and renamed when whole: a
run killed mid-write leaves no file under the final name, only a ``.part`` that cleanup sweeps."""

from __future__ import annotations

import os
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scapy.utils import RawPcapNgWriter

from pktassert.hooks.verdict import TcVerdict, Verdict
from pktassert.machine import reaper
from pktassert.observers import drop_reasons
from pktassert.observers.fate import BY_CODE
from pktassert.reports import kernel_identity
from pktassert.results.capture import Capture

EDGE = 1000          # packets kept from each end of a large inject() call
MOST_OFFENDERS = 10_000
PART = ".part"       # the temporary's suffix (prefix "."): .<name>.<12 hex digits>.part
EPB_VERDICT = 7      # pcapng option epb_verdict; its types: 1 Linux eBPF TC, 2 Linux eBPF XDP
SHB_OS, SHB_USERAPPL = 3, 4  # pcapng section header options
VERDICT_TYPE = {Verdict: 2, TcVerdict: 1}


class _Writer(RawPcapNgWriter):
    """scapy's pcapng writer, and what it does not write: the verdict (an EPB option) and the section
    header's options (the kernel the packets met: shb_os, a comment with its BTF and features)."""

    def _write_block_shb(self) -> None:
        kernel = kernel_identity.identity()
        opts = b""
        for code, text in ((SHB_OS, f"Linux {kernel.release}"), (SHB_USERAPPL, "pktassert"), (1, kernel.line())):
            value = text.encode()
            opts += struct.pack("<HH", code, len(value)) + self._add_padding(value)
        opts += struct.pack("<HH", 0, 0)
        body = self.endian_magic + struct.pack(self.endian + "HHq", 1, 0, -1)
        self.f.write(self.build_block(b"\x0A\x0D\x0D\x0A", body, options=opts))

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.header_present = True
        self._write_block_shb()
        self._write_block_idb(linktype=1, ifname=b"pktassert: injected")  # interface 0
        self._write_block_idb(linktype=1, ifname=b"pktassert: out")       # interface 1

    def packet(self, data: bytes, ifid: int, ts: float, comment: str, verdict: tuple[int, int] | None) -> None:
        opts = b""
        # An option holds at most 65,535 bytes (a filter's printed lines can say more): cut on a character.
        c = comment.encode("utf-8", "backslashreplace")[:0xFFFF].decode("utf-8", "ignore").encode()
        opts += struct.pack("<HH", 1, len(c)) + self._add_padding(c)  # opt_comment
        if verdict is not None:
            value = struct.pack("<Bq", *verdict)
            opts += struct.pack("<HH", EPB_VERDICT, len(value)) + self._add_padding(value)
        opts += struct.pack("<HH", 0, 0)
        stamp = int(ts * self.tsresol)
        body = struct.pack("<IIIII", ifid, stamp >> 32, stamp & 0xFFFFFFFF, len(data), len(data)) + data
        self.f.write(self.build_block(struct.pack("<I", 6), body, options=opts))


def _kept(cap: Capture) -> tuple[np.ndarray, str]:
    """Positions of the capture's records to write, and what the file says about the rest."""
    n = len(cap)
    if n <= 2 * EDGE + MOST_OFFENDERS:
        return np.arange(n), ""
    offenders = cap.positions(cap.offenders) if cap.offenders is not None else _minority(cap)
    keep = np.union1d(np.union1d(np.arange(EDGE), np.arange(n - EDGE, n)), offenders[:MOST_OFFENDERS])
    return keep, (f"; this file holds {len(keep):,} of its {cap.sent:,} packets: the first and last {EDGE:,} "
                  f"and {min(len(offenders), MOST_OFFENDERS):,} offenders")


def _minority(cap: Capture) -> np.ndarray:
    """Without a failed assertion to name them: the packets whose verdict is not the most common one."""
    verdicts = cap.actions.from_column(cap.records["verdict"])
    values, counts = np.unique(verdicts, return_counts=True)
    return np.flatnonzero(verdicts != values[np.argmax(counts)])


def _stages(cap: Capture, pos: int) -> str:
    if not cap.stages:
        return ""
    said = {k: (v.name if v is not None else "never reached") for k, v in cap[pos].stages.items()}
    return "; stages " + " ".join(f"{k}={v}" for k, v in said.items())


def _fate(cap: Capture, pos: int) -> str:
    if cap.fate_codes is None:
        return ""
    detail = cap[pos].detail()
    return f"; fate {BY_CODE[int(cap.fate_codes[pos])].name}" + (f" ({detail})" if detail else "")


def reasons_seen(captures: Sequence[Capture]) -> dict[str, int]:
    """The kernel's drop reasons over a test's inject() calls with fates, the most frequent first."""
    seen: dict[str, int] = {}
    for cap in captures:
        if cap.fate_codes is None or cap.fate_records is None:  # the xdp/tc fixtures, the unit tier: no fates
            continue
        for name, n in cap.reasons().items():
            seen[name] = seen.get(name, 0) + n
    return dict(sorted(seen.items(), key=lambda kv: -kv[1]))


def reason_facts(captures: Sequence[Capture]) -> list[dict[str, Any]]:
    """Each drop reason seen, JSON-ready: how many packets, what it means, its usual cause and fix
    (None where the running kernel lacks the reason or the table has no cause for it)."""
    return [{"reason": name, "packets": n, "meaning": drop_reasons.meaning(name), "cause": drop_reasons.cause(name)}
            for name, n in reasons_seen(captures).items()]


def reason_notes(captures: Sequence[Capture]) -> list[str]:
    """One line per drop reason seen, "NO_SOCKET=3: meaning. Usual cause: ... Fix: ...", as the
    failure message counts them (only "NAME=n" for a reason the running kernel lacks)."""
    return [f"{name}={n}{drop_reasons.explain(name)[len(name):]}" for name, n in reasons_seen(captures).items()]


def write(path: Path, captures: Sequence[Capture], test: str) -> int:
    """Write the captures of one test to ``path``; how many packets it holds. The file appears under
    its name only when whole; on any error (or interruption) the temporary is removed."""
    return _whole(path, lambda part: _write(part, captures, test))


def write_frames(path: Path, frames: Iterable[tuple[bytes, str]]) -> int:
    """Frames with a comment each (e.g. a comparison's differing packets with both answers) to ``path``,
    written as write() writes: whole under its name, or not at all."""
    def fill(part: Path) -> int:
        w, written, now = _Writer(str(part)), 0, time.time()
        try:
            for frame, comment in frames:
                w.packet(frame, 0, now, comment, None)
                written += 1
        finally:
            w.f.close()
        return written
    return _whole(path, fill)


def _whole(path: Path, fill: Callable[[Path], int]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _reserve(path)
    try:
        written = fill(part)
        os.replace(part, path)  # atomic within the folder: readers see the old file or the whole new one
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        reaper.release(part)
    return written


def _reserve(path: Path) -> Path:
    """A temporary name beside ``path`` that no other writer (an xdist worker, another run) holds:
    created here, exclusively, so two writers of the same test never share one."""
    while True:
        part = path.with_name(f".{path.name}.{secrets.token_hex(6)}{PART}")
        reaper.register(part)  # a kill leaves no .part: the reaper removes it once this process is dead
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as to the file
        except FileExistsError:  # another writer's: never ours to remove
            reaper.release(part)
            continue
        return part


def _write(path: Path, captures: Sequence[Capture], test: str) -> int:
    w = _Writer(str(path))
    written = 0
    # Records carry CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns): shown as wall-clock time.
    offset = time.time() - time.monotonic()
    try:
        for call, cap in enumerate(captures, 1):
            keep, note = _kept(cap)
            vtype = VERDICT_TYPE.get(cap.actions)
            verdicts = cap.actions.from_column(cap.records["verdict"])
            for k, pos in enumerate(keep.tolist()):
                r = cap.records[pos]
                number = int(cap.index[pos])
                ts = offset + int(r["ts_ns"]) / 1e9 if int(r["ts_ns"]) else offset + time.monotonic()
                verdict = int(verdicts[pos])
                head = (f"pktassert: {test}: inject() call #{call}"
                        f"{f' at {cap.origin}' if cap.origin else ''}, packet #{number}"
                        f"{note if k == 0 else ''}")
                printed = cap[pos].prints
                comment = (f"{head}; verdict {cap.actions.name_of(int(r['ret']))} ({cap.tier} tier)"
                           f"{_stages(cap, pos)}{_fate(cap, pos)}"
                           f"{'; printed: ' + ' | '.join(printed) if printed else ''}")
                w.packet(cap.frame(pos), 0, ts, comment, None if vtype is None else (vtype, verdict))
                written += 1
                out = _output(cap, pos, verdict)
                if out is not None:
                    w.packet(out[0], 1, ts, f"pktassert: {test}: what came out of packet #{number}: {out[1]}", None)
    finally:
        w.f.close()
    return written


def _output(cap: Capture, pos: int, verdict: int) -> tuple[bytes, str] | None:
    """The frame a packet became on the way out, when the capture knows one."""
    if cap._outputs is None:
        return None
    if cap.tier == "live" and not (cap.actions is Verdict and verdict in (Verdict.TX, Verdict.REDIRECT)):
        return None
    try:
        frame = bytes(cap.output_at(pos))
    except Exception:  # noqa: BLE001 -- a packet without an output frame: nothing to add
        return None
    where = cap[pos].landed or "unit-tier output"
    return frame, f"{cap.actions.name_of(verdict)}, {where}"
