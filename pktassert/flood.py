"""Floods: ``count`` copies of one frame with fields varied, built in numpy, checksums recomputed.

No scapy object per packet: scapy builds the template once and tells where each layer starts.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any, Mapping

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from pktassert.errors import InjectError

# (offset within the layer, width in bytes) of the fields vary= can set.
FIELDS: dict[type[Packet], dict[str, tuple[int, int]]] = {
    IP: {"src": (12, 4), "dst": (16, 4), "ttl": (8, 1), "id": (4, 2), "tos": (1, 1)},
    IPv6: {"src": (8, 16), "dst": (24, 16), "hlim": (7, 1)},
    TCP: {"sport": (0, 2), "dport": (2, 2), "seq": (4, 4), "ack": (8, 4), "window": (14, 2)},
    UDP: {"sport": (0, 2), "dport": (2, 2)},
    ICMP: {"id": (4, 2), "seq": (6, 2)},
    Ether: {"src": (6, 6), "dst": (0, 6)},
}
_SEARCH = (TCP, UDP, ICMP, IP, IPv6, Ether)  # "src" means the IP source, not the MAC


def _offset(pkt: Packet, layer: type[Packet]) -> int:
    return len(pkt) - len(pkt[layer])


def _resolve(pkt: Packet, name: str) -> tuple[int, int, type[Packet]]:
    if "." in name:
        lname, fname = name.split(".", 1)
        layers = [c for c in _SEARCH if c.__name__ == lname]
    else:
        layers, fname = list(_SEARCH), name
    for layer in layers:
        if layer in pkt and fname in FIELDS[layer]:
            off, width = FIELDS[layer][fname]
            return _offset(pkt, layer) + off, width, layer
    known = sorted({f"{c.__name__}.{f}" for c in _SEARCH if c in pkt for f in FIELDS[c]})
    raise InjectError(f"vary={{{name!r}: ...}}: the packet has no field {name!r} that can be varied. "
                      f"Fields of this packet: {', '.join(known)}.")


def _mix(i: np.ndarray, seed: int, name: str) -> np.ndarray:
    """splitmix64 of (seed, field, index): random-looking, yet row i is the same whenever it is built."""
    key = int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")
    z = i * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _values(spec: Any, count: int, width: int, name: str, start: int = 0, seed: int | None = None) -> np.ndarray:
    """Values as numpy: uint64 for width <= 8, (count, 16) bytes for IPv6 addresses."""
    i = np.arange(start, start + count, dtype=np.uint64)
    if seed is not None:  # each value drawn at random (with repeats) instead of in turn
        i = _mix(i, seed, name) >> np.uint64(1)  # 63 bits: the modulo arithmetic below stays in range
    if isinstance(spec, str) and "/" in spec:
        net = ipaddress.ip_network(spec, strict=False)
        base, n = int(net.network_address), net.num_addresses
        if width == 16:
            low = np.uint64(base & (2**64 - 1)) + i % np.uint64(min(n, 2**63))
            hi = np.frombuffer((base >> 64).to_bytes(8, "big"), np.uint8)
            return np.hstack([np.tile(hi, (count, 1)), low.astype(">u8").view(np.uint8).reshape(count, 8)])
        return _fits(np.uint64(base) + i % np.uint64(n), width, name, spec)
    if isinstance(spec, tuple) and len(spec) == 2 and width <= 8:
        lo, hi = (_scalar(v, width, name) for v in spec)
        if hi < lo:
            raise InjectError(f"vary={{{name!r}: {spec}}}: the range is empty. Fix: (low, high), both included.")
        _fits(np.array([hi], np.uint64), width, name, spec)
        return _fits(np.uint64(lo) + i % np.uint64(hi - lo + 1), width, name, spec)
    if isinstance(spec, (list, tuple, range)):
        vals = [_scalar(v, width, name) for v in spec]
        if not vals:
            raise InjectError(f"vary={{{name!r}: {spec!r}}}: no values. Fix: give at least one.")
        pick = (i % np.uint64(len(vals))).astype(np.int64)
        if width <= 8:
            return _fits(np.array(vals, dtype=np.uint64)[pick], width, name, spec)
        return np.array([list(v) for v in vals], np.uint8)[pick]
    one = _scalar(spec, width, name)
    if width <= 8:
        return _fits(np.full(count, one, np.uint64), width, name, spec)
    return np.tile(np.frombuffer(one, np.uint8), (count, 1))


def _fits(vals: np.ndarray, width: int, name: str, spec: Any) -> np.ndarray:
    if width < 8 and len(vals) and int(vals.max()) >> (8 * width):
        raise InjectError(f"vary={{{name!r}: {spec!r}}}: {int(vals.max())} does not fit the {8 * width}-bit "
                          f"field. Fix: keep values within 0..{2 ** (8 * width) - 1}.")
    return vals


def _scalar(v: Any, width: int, name: str) -> Any:
    try:
        if isinstance(v, str):
            if ":" in v and width == 6:
                return int(v.replace(":", ""), 16)
            addr = ipaddress.ip_address(v)
            if len(addr.packed) != min(width, 16) and width in (4, 16):
                raise ValueError(f"an IPv{addr.version} address for a {width}-byte field")
            return addr.packed if width == 16 else int(addr)
        return int(v)
    except (TypeError, ValueError) as e:
        raise InjectError(f"vary={{{name!r}: ...}}: {v!r} is not a value for this field ({e}).") from None


def _put(frames: np.ndarray, at: int, width: int, vals: np.ndarray) -> None:
    if vals.ndim == 2:
        frames[:, at:at + width] = vals
        return
    if width in (1, 2, 4, 8):
        frames[:, at:at + width] = vals.astype(f">u{width}").view(np.uint8).reshape(-1, width)
        return
    for k in range(width):
        frames[:, at + k] = (vals >> np.uint64(8 * (width - 1 - k))) & np.uint64(0xFF)


def _sum16(cols: np.ndarray) -> np.ndarray:
    """Sum of each row's 16-bit big-endian words (an odd last byte padded with zero)."""
    odd = cols.shape[1] % 2
    words = cols[:, :cols.shape[1] - odd].view(">u2")  # rows are contiguous: no copy
    s = words.sum(axis=1, dtype=np.uint64)
    if odd:
        s += cols[:, -1].astype(np.uint64) << np.uint64(8)
    return s


def _fold(s: np.ndarray) -> np.ndarray:
    while (s >> np.uint64(16)).any():
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return (~s) & np.uint64(0xFFFF)


def fix_checksums(frames: np.ndarray, pkt: Packet, ends: np.ndarray | None = None) -> None:
    """Recompute IPv4 header and TCP/UDP/ICMP checksums of every row, in place. ``ends``: each
    row's frame length, when they differ (the bytes after it are zero, so they add nothing)."""
    l4 = next((c for c in (TCP, UDP, ICMP) if c in pkt), None)
    if IP in pkt:
        ip = _offset(pkt, IP)
        ihl = (pkt[IP].ihl or 5) * 4
        frames[:, ip + 10:ip + 12] = 0
        _put(frames, ip + 10, 2, _fold(_sum16(frames[:, ip:ip + ihl])))
        end = ip + pkt[IP].len if pkt[IP].len else len(frames[0])
        if ends is not None:
            end = ends.astype(np.uint64)
        pseudo = _sum16(frames[:, ip + 12:ip + 20])
    elif IPv6 in pkt:
        ip = _offset(pkt, IPv6)
        end = ip + 40 + pkt[IPv6].plen if ends is None else ends.astype(np.uint64)
        pseudo = _sum16(frames[:, ip + 8:ip + 40])
        if l4 is None:
            l4 = type(pkt[IPv6].payload) if pkt[IPv6].nh == 58 else None
    else:
        return
    if l4 is None:
        return
    at = _offset(pkt, l4)
    proto = {TCP: 6, UDP: 17}.get(l4, 58 if IPv6 in pkt else 1)
    field = at + {6: 16, 17: 6}.get(proto, 2)
    frames[:, field:field + 2] = 0
    s = _sum16(frames[:, at:end] if ends is None else frames[:, at:])
    if proto != 1:  # ICMPv4 has no pseudo-header
        s = s + pseudo + np.uint64(proto) + (end - np.uint64(at))
    csum = _fold(s)
    if proto == 17:
        csum[csum == 0] = 0xFFFF
    _put(frames, field, 2, csum)


def build(pkt: Packet, count: int, vary: Mapping[str, Any] | None, start: int = 0,
          seed: int | None = None) -> np.ndarray:
    """``count`` rows of the frame ``pkt`` (an Ether packet) with ``vary`` applied: rows
    ``start``...``start + count`` of the flood (any part of a flood can be built on its own)."""
    template = np.frombuffer(bytes(pkt), np.uint8)
    frames = np.tile(template, (count, 1))
    if not vary:
        return frames
    built = pkt.__class__(bytes(pkt))  # lengths and checksums filled in, as sent
    for name, spec in vary.items():
        at, width, _ = _resolve(built, name)
        _put(frames, at, width, _values(spec, count, width, name, start, seed))
    fix_checksums(frames, built)
    return frames


class Flood:
    """A flood not yet built: rows are made per chunk, and any one again on demand.

    ``vary={"size": ...}`` varies the frame length (bytes, Ethernet header included): the template's
    payload is replaced by zeros up to each row's size, and IP/UDP lengths follow.
    """

    def __init__(self, pkt: Packet, count: int, vary: Mapping[str, Any] | None, seed: int | None = None) -> None:
        self.count, self.seed = count, seed
        vary = dict(vary or {})
        self.size = vary.pop("size", None)
        self.vary = vary or None
        self.pkt = pkt
        if self.size is not None:
            head = pkt.copy()
            last = head.lastlayer()
            if isinstance(last, Raw) and last.underlayer is not None:
                last.underlayer.remove_payload()
            self.least = len(head)
            spec = self.size
            every = list(spec) if isinstance(spec, (list, range)) else \
                [spec[0], spec[1]] if isinstance(spec, tuple) and len(spec) == 2 else [spec]
            sizes = _values(every, len(every), 2, "size")  # checks them, too
            lo, hi = int(sizes.min()), int(sizes.max())
            if lo < self.least:
                raise InjectError(f"vary={{'size': {self.size!r}}}: {lo} bytes is shorter than the headers "
                                  f"({self.least} bytes). Fix: sizes from {self.least}.")
            self.pkt = head / Raw(bytes(hi - self.least))
        self.first = self.rows(0, 1)[0]  # checks vary= before anything is sent

    def __len__(self) -> int:
        return self.count

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows start..stop, and each one's length when sizes vary (the bytes after it are zero)."""
        rows = build(self.pkt, stop - start, self.vary, start, self.seed)
        if self.size is None:
            return rows, None
        lengths = _values(self.size, stop - start, 2, "size", start, self.seed).astype(np.int64)
        rows[np.arange(rows.shape[1]) >= lengths[:, None]] = 0
        built = self.pkt.__class__(bytes(self.pkt))
        for layer, field, minus in ((IP, 2, 0), (IPv6, 4, 40), (UDP, 4, 0)):
            if layer in built:
                at = _offset(built, layer)
                _put(rows, at + field, 2, (lengths - at - minus).astype(np.uint64))
        fix_checksums(rows, built, lengths)
        return rows, lengths

    def frame(self, i: int) -> bytes:
        rows, lengths = self.rows(i, i + 1)
        return rows[0, :None if lengths is None else int(lengths[0])].tobytes()
