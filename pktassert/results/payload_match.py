"""where(payload=...) and where(predicate): matching on what the inspector does not parse. A flood's
payloads are searched in numpy, chunk by chunk, as its rows are built (no scapy object per packet);
a list of packets through scapy. The payload is what follows the transport header (TCP, UDP, ICMP),
or the IP header for other protocols."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

if TYPE_CHECKING:
    from pktassert.frames.flood import Flood

BLOCK = 16384  # rows searched at a time


def payload_of(pkt: Packet) -> bytes:
    for layer in (TCP, UDP, ICMP, IP, IPv6):
        if layer in pkt:
            return bytes(pkt[layer].payload)
    return bytes(pkt.payload)


def _offset(flood: Flood) -> int:
    template = Ether(bytes(flood.pkt))
    return len(template) - len(payload_of(template))


def _contains(region: np.ndarray, ends: np.ndarray, needle: np.ndarray) -> np.ndarray:
    """Rows of ``region`` holding ``needle`` wholly before their end (bytes after a row's end are padding)."""
    n, width = region.shape
    m = len(needle)
    if m == 0:
        return np.ones(n, bool)
    if m > width:
        return np.zeros(n, bool)
    hit = region[:, :width - m + 1] == needle[0]
    for k in range(1, m):
        hit &= region[:, k:width - m + 1 + k] == needle[k]
    hit &= np.arange(width - m + 1)[None, :] + m <= ends[:, None]
    return hit.any(axis=1)


def contains(needle: bytes, index: np.ndarray, flood: Flood | None, frame: Callable[[int], bytes]) -> np.ndarray:
    """For each packet (send positions ``index``), whether its payload contains ``needle``."""
    want = np.frombuffer(bytes(needle), np.uint8)
    if flood is None:
        return np.array([bytes(needle) in payload_of(Ether(frame(i))) for i in range(len(index))], bool)
    off = _offset(flood)
    out = np.zeros(len(index), bool)
    # Blocks of at most BLOCK rows of the flood (a sample's positions spread over step times as many).
    cuts = np.searchsorted(index, np.arange(int(index[0]), int(index[-1]) + 1, BLOCK)) if len(index) else np.zeros(0, np.int64)
    for at, end in zip(cuts, [*cuts[1:], len(index)]):
        if at == end:
            continue
        block = index[at:end]
        lo, hi = int(block[0]), int(block[-1]) + 1
        rows, lengths = flood.rows(lo, hi)
        picked = block - lo
        ends = (lengths[picked] if lengths is not None else np.full(len(block), rows.shape[1])) - off
        out[at:end] = _contains(rows[picked, off:], ends, want)
    return out


def satisfying(pred: Callable[[Ether], Any], n: int, frame: Callable[[int], bytes]) -> np.ndarray:
    """For each of ``n`` packets, whether ``pred`` is true of it as scapy dissects it."""
    return np.array([bool(pred(Ether(frame(i)))) for i in range(n)], bool)
