"""Read a capture (pcap or pcapng) as Ethernet frames and their times, without dissecting them."""

from __future__ import annotations

import os

import numpy as np
from scapy.utils import RawPcapReader

from pktassert.errors import InjectError

ETHERNET = 1  # LINKTYPE_ETHERNET


def read(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """(frames, seconds since the first frame)."""
    try:
        reader = RawPcapReader(str(path))  # scapy picks its pcapng reader for pcapng files
    except (OSError, Exception) as e:  # scapy raises Scapy_Exception for a file that is not a capture
        raise InjectError(f"cannot read capture {path}: {e}. Fix: a pcap or pcapng file of Ethernet frames.") from None
    frames, times = [], []
    with reader:
        linktype = getattr(reader, "linktype", ETHERNET)
        for data, meta in reader:
            if getattr(meta, "linktype", linktype) != ETHERNET:
                raise InjectError(f"{path}: frame {len(frames)} is not Ethernet (link type "
                                  f"{getattr(meta, 'linktype', linktype)}). Fix: capture on an Ethernet interface.")
            if hasattr(meta, "tsresol"):
                times.append(((meta.tshigh << 32) | meta.tslow) / meta.tsresol)
            else:
                times.append(meta.sec + meta.usec / (1e9 if getattr(reader, "nano", False) else 1e6))
            frames.append(bytes(data))
    if not frames:
        raise InjectError(f"{path} holds no frames.")
    t = np.asarray(times, np.float64)
    return frames, t - t[0]
