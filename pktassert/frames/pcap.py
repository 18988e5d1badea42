"""Read a capture (pcap or pcapng) as Ethernet frames and their times, without dissecting them.

Whatever is not whole is refused, naming the frame: scapy's readers warn and go on with a record
cut by the snaplen, stop quietly at a record the file ends inside or at a damaged block, and skip a
frame of an interface the file never described. So the file is walked first, as Wireshark's reader
walks it (block lengths, sections, interfaces, options), and scapy must then give every frame.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

from pktassert.errors import InjectError

ETHERNET = 1  # LINKTYPE_ETHERNET
ETH_HLEN = 14
MOST_BYTES = 262_144  # the largest frame a capture holds (Wireshark's limit; scapy cuts frames at 65,535)
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}  # a section header's byte-order magic
SHB, IDB, OPB, SPB, NRB, ISB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 10  # section, interface, (obsolete,
PCAPNG_PACKETS = (OPB, SPB, EPB)  # simple) packet, name resolution, statistics, enhanced packet, secrets: blocks
FIXED = {SHB: 16, IDB: 8, OPB: 20, SPB: 4, NRB: 0, ISB: 12, EPB: 20, DSB: 8}  # bytes of fixed fields
NAMES = {SHB: "a section header", IDB: "an interface description", OPB: "a packet", SPB: "a simple packet",
         NRB: "a name resolution", ISB: "an interface statistics", EPB: "an enhanced packet", DSB: "a decryption secrets"}
FRAME_OPTIONS = {2: (4, 4), 3: (1, 0), 4: (8, 8), 5: (8, 8), 6: (4, 4), 7: (1, 0)}  # flags, hash, drops, id, queue,
# verdict: (least, most bytes; 0: no most), as Wireshark's reader requires them


class _Damaged(Exception):
    """Where a walk of the file found it damaged: the frame, and what is wrong (None: cut short)."""

    def __init__(self, frame: int, what: str | None = None) -> None:
        super().__init__(what)
        self.frame, self.what = frame, what


def read(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """(frames, seconds since the first frame)."""
    data = _contents(path)
    expected = _check_whole(path, data)
    try:
        # scapy picks its pcapng reader for pcapng; it reads the very bytes walked (its hints say str only)
        reader = RawPcapReader(io.BytesIO(data))  # type: ignore[arg-type]
    except (OSError, EOFError, struct.error, Scapy_Exception) as e:  # Scapy_Exception: not a capture
        why = "it starts as one, but is cut short inside its file header" if _starts_like_capture(data) else e
        raise InjectError(f"cannot read capture {path}: {why}. Fix: a pcap or pcapng file of Ethernet frames.") from None
    frames: list[bytes] = []
    times: list[float] = []
    with reader:
        linktype = getattr(reader, "linktype", ETHERNET)
        for frame, meta in _records(reader, path, frames):
            n = len(frames)
            if getattr(meta, "linktype", linktype) != ETHERNET:
                raise InjectError(f"{path}: frame {_no(n)} is not Ethernet (link type "
                                  f"{getattr(meta, 'linktype', linktype)}). Fix: capture on an Ethernet interface.")
            if len(frame) < meta.wirelen:
                raise InjectError(f"{path}: frame {_no(n)} was captured cut short: {len(frame)} of its "
                                  f"{meta.wirelen} bytes (the capture's snaplen), and a part of a frame cannot "
                                  f"be replayed as it was. Fix: capture whole frames (tcpdump -s 0), or leave "
                                  f"this frame out (tshark -r {path} -Y 'frame.number != {n + 1}' -w out.pcap).")
            if len(frame) < ETH_HLEN:
                raise InjectError(f"{path}: frame {_no(n)} is {len(frame)} bytes, shorter than an Ethernet header "
                                  f"({ETH_HLEN}). Fix: leave it out of the capture (tshark -r {path} -Y "
                                  f"'frame.len >= 14' -w out.pcap).")
            if hasattr(meta, "tsresol"):
                high, low, resol = (getattr(meta, f) for f in ("tshigh", "tslow", "tsresol"))  # pcapng's
                times.append(((high << 32) | low) / resol)
            else:
                times.append(meta.sec + meta.usec / (1e9 if getattr(reader, "nano", False) else 1e6))
            frames.append(bytes(frame))
    if expected is not None and len(frames) < expected:  # scapy stopped early (at a block it found damaged)
        _refuse(path, _Damaged(len(frames), "a record scapy's reader could not read"))
    if not frames:
        raise InjectError(f"{path} holds no frames. Fix: a capture with at least one Ethernet frame.")
    t = np.asarray(times, np.float64)
    return frames, t - t[0]


def _contents(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, uncompressed when gzip-compressed (scapy reads those too)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InjectError(f"cannot read capture {path}: {e.strerror}. Fix: a pcap or pcapng file of Ethernet "
                          f"frames that this process can read.") from None
    if not data:
        raise InjectError(f"cannot read capture {path}: the file is empty. Fix: a pcap or pcapng file of Ethernet "
                          f"frames (written whole: was the capture stopped before it wrote anything?).")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error):
            raise InjectError(f"{path}: the compressed capture is cut short or damaged (gzip cannot read it). Fix: "
                              f"copy or write the whole file again.") from None
    return data


def _records(reader: RawPcapReader, path: str | os.PathLike[str], frames: list[bytes]) -> Iterator[tuple[bytes, Any]]:
    """scapy's records; whatever else its parser raises on a file the walk let through, said as the frame's."""
    try:
        yield from reader
    except InjectError:
        raise
    except Exception as e:  # noqa: BLE001 -- a third-party parser on hostile bytes: its error, named, not a traceback
        _refuse(path, _Damaged(len(frames), f"scapy's reader fails there ({type(e).__name__}: {e})"))


def _starts_like_capture(data: bytes) -> bool:
    return data[:4] in PCAP_MAGICS or data[:4] == SHB.to_bytes(4, "big")


def _no(n: int) -> str:
    return f"{n} (Wireshark's No. {n + 1})"


def _check_whole(path: str | os.PathLike[str], data: bytes) -> int | None:
    """How many frames the file holds, walking its records as Wireshark's reader does; refused, naming
    the frame, when it ends inside one (copied or written only in part) or is damaged. None: not a
    capture at all (scapy says so)."""
    if not _starts_like_capture(data):
        return None
    ng = data[:4] not in PCAP_MAGICS
    header = struct.unpack_from(PCAPNG_ORDER.get(data[8:12], "<") + "I", data, 4)[0] if ng and len(data) >= 12 else 24
    if len(data) < max(header, 12):
        raise InjectError(f"cannot read capture {path}: it starts as one, but is cut short inside its file header. "
                          f"Fix: copy or write the whole file again.")
    try:
        return _pcapng_walk(data) if ng else _pcap_walk(data, PCAP_MAGICS[data[:4]])
    except _Damaged as d:
        _refuse(path, d)
    return None


def _refuse(path: str | os.PathLike[str], d: _Damaged) -> None:
    n = d.frame
    if d.what is None:
        keep = f", or keep the frames before it (editcap -r {path} out.pcap 1-{n})" if n else ""
        raise InjectError(f"{path}: the file is cut short inside frame {_no(n)}: it ends in the middle of "
                          f"that frame's record (copied or written only in part). Fix: copy or write the whole "
                          f"file again{keep}.")
    keep = f"; the {n} frames before it: editcap -r {path} out.pcapng 1-{n}" if n else ""
    raise InjectError(f"{path}: the file is damaged at frame {_no(n)} (or in a block just before it): {d.what}, "
                      f"which no capture tool writes. Fix: capture or copy the file again{keep}.")


def _pcap_walk(data: bytes, endian: str) -> int:
    """The number of frames: the file header, then per frame a 16-byte header (its caplen at 8) and the bytes."""
    at, n = 24, 0
    while at < len(data):
        if at + 16 > len(data):
            raise _Damaged(n)
        caplen = struct.unpack_from(endian + "I", data, at + 8)[0]
        if caplen > MOST_BYTES:
            raise _Damaged(n, f"a record of {caplen:,} bytes, more than a capture holds ({MOST_BYTES:,})")
        if at + 16 + caplen > len(data):
            raise _Damaged(n)
        at, n = at + 16 + caplen, n + 1
    return n


def _pcapng_walk(data: bytes) -> int:
    """The number of frames: blocks (type, total length, body, total length again) in sections (each
    from a section header, with its own byte order and interfaces)."""
    at, n, endian, snaplens = 0, 0, "<", list[int]()
    while at < len(data):
        if at + 12 > len(data):
            raise _Damaged(n)
        if data[at:at + 4] == SHB.to_bytes(4, "big"):  # the same either way round
            order = data[at + 8:at + 12]
            if order not in PCAPNG_ORDER:
                raise _Damaged(n, f"a section header with no byte-order magic (0x{order.hex()})")
            endian, snaplens = PCAPNG_ORDER[order], []
        kind, size = struct.unpack_from(endian + "II", data, at)
        if size < 12 or size % 4:
            raise _Damaged(n, f"a block of {size:,} bytes (blocks are a multiple of 4, at least 12)")
        if at + size > len(data):
            raise _Damaged(n)
        if struct.unpack_from(endian + "I", data, at + size - 4)[0] != size:
            raise _Damaged(n, "a block whose two length fields differ")
        _check_block(kind, data[at + 8:at + size - 4], endian, snaplens, n)
        at, n = at + size, n + (kind in PCAPNG_PACKETS)
    return n


def _check_block(kind: int, body: bytes, endian: str, snaplens: list[int], n: int) -> None:
    """A block's fixed fields and options as Wireshark's reader checks them; an IDB adds its snaplen."""
    if kind not in FIXED:
        return  # a block type neither reader looks into (custom, systemd journal, ...)
    if len(body) < FIXED[kind]:
        raise _Damaged(n, f"{NAMES[kind]} block of {len(body) + 12} bytes, too short for its fields")
    start = FIXED[kind]
    if kind == SHB and struct.unpack_from(endian + "HH", body, 4) != (1, 0):
        raise _Damaged(n, "a section header of pcapng version {}.{} (1.0 is the one)".format(
            *struct.unpack_from(endian + "HH", body, 4)))
    if kind == IDB:
        snaplens.append(struct.unpack_from(endian + "I", body, 4)[0])
    elif kind == DSB:  # decryption secrets: their type and length, then the secrets
        length = struct.unpack_from(endian + "I", body, 4)[0]
        start += length + -length % 4
        if start > len(body):
            raise _Damaged(n, f"decryption secrets of {length:,} bytes in a block with room for {len(body) - 8:,}")
    elif kind == NRB:  # name records (type, length, value), up to an end record; then options
        while start + 4 <= len(body):
            record, length = struct.unpack_from(endian + "HH", body, start)
            start += 4 + length + -length % 4
            if record == 0:
                break
        if start > len(body):
            raise _Damaged(n, "a name resolution record that runs past the end of its block")
    elif kind in PCAPNG_PACKETS:
        start = _packet(kind, body, endian, snaplens, n)
    at, options = 0, body[start:]
    while at + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, at)
        if at + 4 + length > len(options):
            raise _Damaged(n, f"an option (code {code}) of {length:,} bytes that runs past the end of its block")
        if code == 0:  # opt_endofopt
            break
        if kind == IDB and code == 9 and length == 1 and options[at + 4] & 0x7F > (63 if options[at + 4] & 0x80 else 19):
            raise _Damaged(n, f"an interface's time resolution ({options[at + 4]:#x}) finer than 64-bit time stamps go")
        if kind in (OPB, EPB) and code in FRAME_OPTIONS:
            least, most = FRAME_OPTIONS[code]
            if code == 7 and length and options[at + 4] in (1, 2):  # a Linux eBPF verdict: its type and 8 bytes
                least = most = 9
            if not least <= length <= (most or length):
                raise _Damaged(n, f"a frame's option {code} of {length} bytes (it has {least}"
                                  f"{'' if most == least else ' or more'})")
        at += 4 + length + -length % 4


def _packet(kind: int, body: bytes, endian: str, snaplens: list[int], n: int) -> int:
    """A packet block's interface and length checked; where its options start."""
    iface = 0 if kind == SPB else struct.unpack_from(endian + ("H" if kind == OPB else "I"), body, 0)[0]
    if iface >= len(snaplens):
        raise _Damaged(n, f"a frame of interface {iface}, but its section describes {len(snaplens)} interface(s)")
    if kind == SPB:  # no caplen of its own: the frame cut to the first interface's snaplen (0: none)
        wirelen = struct.unpack_from(endian + "I", body, 0)[0]
        caplen = min(wirelen, snaplens[0] or wirelen)
    else:
        caplen = struct.unpack_from(endian + "I", body, 12)[0]
    room = len(body) - FIXED[kind]
    if caplen > min(room, MOST_BYTES):
        raise _Damaged(n, f"a frame of {caplen:,} bytes in a block with room for {room:,}" if caplen > room else
                          f"a frame of {caplen:,} bytes, more than a capture holds ({MOST_BYTES:,})")
    return len(body) if kind == SPB else FIXED[kind] + caplen + -caplen % 4
