"""Read a capture (pcap or pcapng) as Ethernet frames and their times, without dissecting them.

Whatever is not whole is refused, naming the frame: scapy's readers warn and go on with a record
cut by the snaplen, and stop quietly at a record the file ends inside.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

from pktassert.errors import InjectError

ETHERNET = 1  # LINKTYPE_ETHERNET
ETH_HLEN = 14
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}  # a section header's byte-order magic
PCAPNG_SECTION, PCAPNG_PACKETS = 0x0A0D0D0A, (2, 3, 6)  # blocks: section header; (obsolete, simple, enhanced) packet


def read(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """(frames, seconds since the first frame)."""
    try:
        reader = RawPcapReader(str(path))  # scapy picks its pcapng reader for pcapng files
    except (OSError, EOFError, struct.error, Scapy_Exception) as e:  # Scapy_Exception: not a capture
        why = "it starts as one, but is cut short inside its file header" if _starts_like_capture(path) else e
        raise InjectError(f"cannot read capture {path}: {why}. Fix: a pcap or pcapng file of Ethernet frames.") from None
    frames: list[bytes] = []
    times: list[float] = []
    with reader:
        _check_whole(path)
        linktype = getattr(reader, "linktype", ETHERNET)
        for data, meta in reader:
            n = len(frames)
            if getattr(meta, "linktype", linktype) != ETHERNET:
                raise InjectError(f"{path}: frame {_no(n)} is not Ethernet (link type "
                                  f"{getattr(meta, 'linktype', linktype)}). Fix: capture on an Ethernet interface.")
            if len(data) < meta.wirelen:
                raise InjectError(f"{path}: frame {_no(n)} was captured cut short: {len(data)} of its "
                                  f"{meta.wirelen} bytes (the capture's snaplen), and a part of a frame cannot "
                                  f"be replayed as it was. Fix: capture whole frames (tcpdump -s 0), or leave "
                                  f"this frame out (tshark -r {path} -Y 'frame.number != {n + 1}' -w out.pcap).")
            if len(data) < ETH_HLEN:
                raise InjectError(f"{path}: frame {_no(n)} is {len(data)} bytes, shorter than an Ethernet header "
                                  f"({ETH_HLEN}). Fix: leave it out of the capture (tshark -r {path} -Y "
                                  f"'frame.len >= 14' -w out.pcap).")
            if hasattr(meta, "tsresol"):
                high, low, resol = (getattr(meta, f) for f in ("tshigh", "tslow", "tsresol"))  # pcapng's
                times.append(((high << 32) | low) / resol)
            else:
                times.append(meta.sec + meta.usec / (1e9 if getattr(reader, "nano", False) else 1e6))
            frames.append(bytes(data))
    if not frames:
        raise InjectError(f"{path} holds no frames. Fix: a capture with at least one Ethernet frame.")
    t = np.asarray(times, np.float64)
    return frames, t - t[0]


def _starts_like_capture(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    return magic in PCAP_MAGICS or magic == PCAPNG_SECTION.to_bytes(4, "big")


def _no(n: int) -> str:
    return f"{n} (Wireshark's No. {n + 1})"


def _check_whole(path: str | os.PathLike[str]) -> None:
    """Refuse a file that ends inside a record (copied or written only in part): walk the records'
    lengths, which is all it takes, and say in which frame it ends."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # scapy reads gzip-compressed captures too
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError):
            raise InjectError(f"{path}: the compressed capture is cut short. Fix: copy or write the whole "
                              f"file again.") from None
    if data[:4] in PCAP_MAGICS:
        frame = _pcap_cut(data, PCAP_MAGICS[data[:4]])
    else:
        frame = _pcapng_cut(data)
    if frame is not None:
        keep = f", or keep the frames before it (editcap -r {path} out.pcap 1-{frame})" if frame else ""
        raise InjectError(f"{path}: the file is cut short inside frame {_no(frame)}: it ends in the middle of "
                          f"that frame's record (copied or written only in part). Fix: copy or write the whole "
                          f"file again{keep}.")


def _pcap_cut(data: bytes, endian: str) -> int | None:
    """The number of the frame whose record the file ends inside, or None."""
    at, n = 24, 0  # the file header, then per frame a 16-byte header (its caplen at 8) and the bytes
    while at < len(data):
        if at + 16 > len(data):
            return n
        at, n = at + 16 + struct.unpack_from(endian + "I", data, at + 8)[0], n + 1
    return n - 1 if at > len(data) else None


def _pcapng_cut(data: bytes) -> int | None:
    at, n, endian = 0, 0, "<"  # blocks: type, total length, body, total length again
    while at < len(data):
        if at + 12 > len(data):
            return n
        if data[at:at + 4] == PCAPNG_SECTION.to_bytes(4, "big"):  # the same either way round
            endian = PCAPNG_ORDER.get(data[at + 8:at + 12], endian)
        kind, size = struct.unpack_from(endian + "II", data, at)
        if size < 12 or at + size > len(data):
            return n
        at, n = at + size, n + (kind in PCAPNG_PACKETS)
    return None
