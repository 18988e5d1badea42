"""Floods: ``count`` copies of one frame with fields varied, built in numpy, checksums recomputed.

No scapy object per packet: scapy builds the template once and tells where each layer starts.
Field names: a bare one (``src``) is the outermost layer's that has it, ``IP.src`` the outermost
IP's, ``IP#2.src`` the second IP's from the outside (a tunnel's inner header).
"""

from __future__ import annotations

import hashlib
import ipaddress
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from pktassert.errors import InjectError
from pktassert.frames.checksums import Checksums, layers, on_purpose

# (offset within the layer, width in bytes, kind) of the fields vary= can set.
FIELDS: dict[type[Packet], dict[str, tuple[int, int, str]]] = {
    IP: {"src": (12, 4, "ipv4"), "dst": (16, 4, "ipv4"), "ttl": (8, 1, "int"), "id": (4, 2, "int"),
         "tos": (1, 1, "int")},
    IPv6: {"src": (8, 16, "ipv6"), "dst": (24, 16, "ipv6"), "hlim": (7, 1, "int")},
    TCP: {"sport": (0, 2, "int"), "dport": (2, 2, "int"), "seq": (4, 4, "int"), "ack": (8, 4, "int"),
          "window": (14, 2, "int")},
    UDP: {"sport": (0, 2, "int"), "dport": (2, 2, "int")},
    ICMP: {"id": (4, 2, "int"), "seq": (6, 2, "int")},
    Ether: {"src": (6, 6, "mac"), "dst": (0, 6, "mac")},
}
# Which layer a bare field name means: the first group that has it ("src" is the IP source, not the
# MAC; "seq" TCP's or ICMP's), and in that group the outermost layer (a tunnel's outer header).
GROUPS = ((TCP, UDP, ICMP), (IP, IPv6), (Ether,))
# What each kind of field is, and values it takes, for the messages.
KINDS = {
    "ipv4": ("an IPv4 address field", ["'198.51.100.0/24'", "'198.51.100.7'", "('198.51.100.1', '198.51.100.9')"]),
    "ipv6": ("an IPv6 address field", ["'2001:db8::/120'", "'2001:db8::7'", "('2001:db8::1', '2001:db8::9')"]),
    "mac": ("a MAC address field", ["'02:00:5e:00:53:01'", "['02:00:5e:00:53:01', '02:00:5e:00:53:02']"]),
    "int": ("{a} {bits}-bit field (0..{top})", ["(1, {top})", "[1, 2, 3]"]),
    "size": ("the frame length in bytes (Ethernet header included)", ["(64, 1514)", "[64, 512, 1514]"]),
}
FAMILY = {4: "ipv4", 6: "ipv6"}
MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
LENGTHS = {IP: (2, 0), IPv6: (4, 40), UDP: (4, 0)}  # length fields that follow the frame size: (offset, minus)


@dataclass(frozen=True)
class Field:
    """A field vary= sets: ``label`` as the user can write it, where it is in the frame, its kind."""

    label: str
    at: int
    width: int
    kind: str

    def describe(self) -> tuple[str, list[str]]:
        """(what the field is, values it takes)."""
        what, examples = KINDS[self.kind]
        bits, top = 8 * self.width, 2 ** (8 * self.width) - 1
        return what.format(a="an" if bits == 8 else "a", bits=bits, top=top), [e.format(top=top) for e in examples]


SIZE = Field("size", 0, 2, "size")


PAYLOAD_BYTES = re.compile(r"payload\[(\d+)(?::(\d+))?\]")


def _payload_field(built: Packet, name: str, m: re.Match[str]) -> Field:
    """``payload[i]`` (a byte) or ``payload[i:j]`` (a big-endian number over those bytes) of the template's payload."""
    raw = [(layer, at) for layer, at, _ in layers(built) if isinstance(layer, Raw)]
    i = int(m[1])
    j = int(m[2]) if m[2] is not None else i + 1
    size = len(raw[0][0]) if raw else 0
    if not raw or not i < j <= size or j - i > 8:
        raise InjectError(f"vary={{{name!r}: ...}}: the packet's payload has {size} bytes; {name} must lie in it and "
                          f"span 1 to 8 bytes. Fix: a payload long enough (scapy: / Raw(...)), e.g. 'payload[0]' or "
                          f"'payload[2:4]'.")
    return Field(name, raw[0][1] + i, j - i, "int")


def _resolve(built: Packet, name: str) -> Field:
    """The field ``name`` of the template (built, dissected), or an error listing the ones it has."""
    m = PAYLOAD_BYTES.fullmatch(name)
    if m:
        return _payload_field(built, name, m)
    found = [(layer, at, key) for layer, at, key in layers(built) if key[0] in FIELDS]
    if "." in name:
        lname, fname = name.rsplit(".", 1)
        cname, _, nth = lname.partition("#")
        matches = [f for f in found if f[2][0].__name__ == cname and str(f[2][1]) == (nth or "1")]
    else:
        fname = name
        matches = sorted(found, key=lambda f: (next(g for g, cs in enumerate(GROUPS) if f[2][0] in cs), f[1]))
    for _, at, (cls, n) in matches:
        if fname in FIELDS[cls]:
            off, width, kind = FIELDS[cls][fname]
            return Field(_label(cls, n, fname), at + off, width, kind)
    known = [_label(cls, n, f) for _, _, (cls, n) in found for f in FIELDS[cls]]
    raise InjectError(f"vary={{{name!r}: ...}}: the packet has no field {name!r} that can be varied. "
                      f"Fix: one of this packet's fields: {', '.join(known)}. A bare name, or LAYER.field, is "
                      f"the outermost such layer's; LAYER#n.field the n-th from the outside (e.g. IP#2.src, "
                      f"a tunnel's inner IP source).")


def _label(cls: type[Packet], n: int, fname: str) -> str:
    return f"{cls.__name__}{'' if n == 1 else f'#{n}'}.{fname}"


def _mix(i: np.ndarray, seed: int, name: str) -> np.ndarray:
    """splitmix64 of (seed, field, index): random-looking, yet row i is the same whenever it is built."""
    key = int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")
    z = i * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _values(spec: Any, count: int, f: Field, name: str, start: int = 0, seed: int | None = None) -> np.ndarray:
    """Values as numpy: uint64 for width <= 8, (count, 16) bytes for IPv6 addresses."""
    i = np.arange(start, start + count, dtype=np.uint64)
    if seed is not None:  # each value drawn at random (with repeats) instead of in turn
        i = _mix(i, seed, name) >> np.uint64(1)  # 63 bits: the modulo arithmetic below stays in range
    if isinstance(spec, str) and "/" in spec:
        return _nth(*_prefix(spec, f, name), i, f)
    if isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = (_scalar(v, f, name, spec) for v in spec)
        if hi < lo:
            raise InjectError(f"vary={{{name!r}: {spec!r}}}: the range of {f.label} is empty. "
                              f"Fix: (low, high), both included, e.g. {_example(f, name)}.")
        return _nth(lo, hi - lo + 1, i, f)
    if isinstance(spec, (list, tuple, range)):
        vals = [_scalar(v, f, name, spec) for v in spec]
        if not vals:
            raise InjectError(f"vary={{{name!r}: {spec!r}}}: no values for {f.label}. "
                              f"Fix: give at least one, e.g. {_example(f, name)}.")
        pick = (i % np.uint64(len(vals))).astype(np.int64)
        if f.width <= 8:
            return np.array(vals, dtype=np.uint64)[pick]
        return np.array([list(v.to_bytes(f.width, "big")) for v in vals], np.uint8)[pick]
    return _nth(_scalar(spec, f, name, spec), 1, i, f)


def _nth(base: int, n: int, i: np.ndarray, f: Field) -> np.ndarray:
    """base + i % n in each row: uint64, or (count, 16) bytes for IPv6 (128-bit, with the carry)."""
    off = i % np.uint64(min(n, 2**63))
    if f.width <= 8:
        return np.uint64(base) + off  # fits: base + n - 1 was checked against the width
    low = np.uint64(base & (2**64 - 1)) + off  # wraps around 2**64 ...
    high = np.uint64(base >> 64) + (low < np.uint64(base & (2**64 - 1))).astype(np.uint64)  # ... and carries
    return np.hstack([high.astype(">u8").view(np.uint8).reshape(-1, 8), low.astype(">u8").view(np.uint8).reshape(-1, 8)])


def _refuse(name: str, spec: Any, f: Field, why: str) -> InjectError:
    what, _ = f.describe()
    return InjectError(f"vary={{{name!r}: {spec!r}}}: {why} {f.label}, {what}. Fix: e.g. {_example(f, name)}.")


def _example(f: Field, name: str) -> str:
    return " or ".join(f"{{{name!r}: {v}}}" for v in f.describe()[1])


def _prefix(spec: str, f: Field, name: str) -> tuple[int, int]:
    """(first address, how many) of an address prefix, for an address field of its family."""
    try:
        net = ipaddress.ip_network(spec, strict=False)
    except ValueError as e:
        raise _refuse(name, spec, f, f"{spec!r} is not an address prefix ({e}), so not a value for") from None
    if f.kind not in FAMILY.values():
        raise _refuse(name, spec, f, f"{spec!r} is an address prefix, not a value for")
    if FAMILY[net.version] != f.kind:
        raise _refuse(name, spec, f, f"{spec!r} is an IPv{net.version} prefix, not a value for")
    return int(net.network_address), net.num_addresses


def _scalar(v: Any, f: Field, name: str, spec: Any) -> int:
    """One value as an int, checked against the field: its family, its width, never negative."""
    if isinstance(v, str):
        n = _parse(v, f, name, spec)
    else:
        try:
            n = operator.index(v)  # ints and numpy ints; not floats, which would be cut (1.5 -> 1)
        except TypeError:
            raise _refuse(name, spec, f, f"{v!r} is not a value for") from None
    if n < 0:
        raise _refuse(name, spec, f, f"{v!r} is not a value for")
    if n >> (8 * f.width):
        raise _refuse(name, spec, f, f"{v!r} does not fit")
    return n


def _parse(v: str, f: Field, name: str, spec: Any) -> int:
    if "/" in v:
        raise _refuse(name, spec, f, f"{v!r} is an address prefix (in a list or a pair, give addresses), "
                                     f"not a value for")
    if f.kind == "mac" and MAC.fullmatch(v):
        return int(re.sub("[:-]", "", v), 16)
    if f.kind == "int" and v.isascii() and v.isdigit():
        return int(v)
    if f.kind in FAMILY.values():
        try:
            addr = ipaddress.ip_address(v)
        except ValueError:
            raise _refuse(name, spec, f, f"{v!r} is not a value for") from None
        if FAMILY[addr.version] != f.kind:
            raise _refuse(name, spec, f, f"{v!r} is an IPv{addr.version} address, not a value for")
        return int(addr)
    raise _refuse(name, spec, f, f"{v!r} is not a value for")


def _put(frames: np.ndarray, at: int, width: int, vals: np.ndarray) -> None:
    if vals.ndim == 2:
        frames[:, at:at + width] = vals
        return
    if width in (1, 2, 4, 8):
        frames[:, at:at + width] = vals.astype(f">u{width}").view(np.uint8).reshape(-1, width)
        return
    for k in range(width):
        frames[:, at + k] = (vals >> np.uint64(8 * (width - 1 - k))) & np.uint64(0xFF)


def _fields(built: Packet, vary: Mapping[str, Any] | None) -> list[tuple[str, Field, Any]]:
    return [(name, _resolve(built, name), spec) for name, spec in (vary or {}).items()]


def _fill(frames: np.ndarray, fields: list[tuple[str, Field, Any]], start: int, seed: int | None) -> None:
    for name, f, spec in fields:
        _put(frames, f.at, f.width, _values(spec, len(frames), f, name, start, seed))


def build(pkt: Packet, count: int, vary: Mapping[str, Any] | None, start: int = 0,
          seed: int | None = None) -> np.ndarray:
    """``count`` rows of the frame ``pkt`` (an Ether packet) with ``vary`` applied: rows
    ``start``...``start + count`` of the flood (any part of a flood can be built on its own).
    Checksums ``pkt`` set on purpose stay as given; the others are recomputed."""
    frames = np.tile(np.frombuffer(bytes(pkt), np.uint8), (count, 1))
    if not vary:
        return frames
    built = pkt.__class__(bytes(pkt))  # lengths and checksums filled in, as sent
    _fill(frames, _fields(built, vary), start, seed)
    Checksums(built, on_purpose(pkt)).apply(frames)
    return frames


def _headers(pkt: Packet) -> Packet:
    """The packet without its payload (the Raw layer at its end)."""
    head = pkt.copy()
    last = head.lastlayer()
    if isinstance(last, Raw) and last.underlayer is not None:
        last.underlayer.remove_payload()
    return head


def _payload_table(spec: Any) -> tuple[np.ndarray, np.ndarray]:
    """vary={"payload": ...}: one bytes value or a list of them, as a zero-padded table and their sizes."""
    every = [spec] if isinstance(spec, (bytes, bytearray)) else list(spec) if isinstance(spec, (list, tuple)) else None
    if not every or not all(isinstance(p, (bytes, bytearray)) for p in every):
        raise InjectError(f"vary={{'payload': {spec!r}}}: give the payloads as bytes, one or a list "
                          f"(e.g. [b'GET /etc/passwd', b'GET /index.html']); a byte range: 'payload[4]' or "
                          f"'payload[4:6]' with values, as for any field.")
    width = max(len(p) for p in every)
    table = np.zeros((len(every), width), np.uint8)
    for k, p in enumerate(every):
        table[k, :len(p)] = np.frombuffer(bytes(p), np.uint8)
    return table, np.array([len(p) for p in every], np.int64)


class Flood:
    """A flood not yet built: rows are made per chunk, and any one again on demand.

    ``vary={"size": ...}`` varies the frame length (bytes, Ethernet header included): the template's
    payload is replaced by zeros up to each row's size, and IP/IPv6/UDP lengths follow (every one in
    the stack: a tunnel's inner headers too).
    """

    def __init__(self, pkt: Packet, count: int, vary: Mapping[str, Any] | None, seed: int | None = None) -> None:
        self.count, self.seed = count, seed
        vary = dict(vary or {})
        self.size = vary.pop("size", None)
        payloads = vary.pop("payload", None)
        self.vary = vary or None
        kept = on_purpose(pkt)  # decided on the template as given, before its payload is replaced
        self.pkt = pkt
        self.payloads: tuple[np.ndarray, np.ndarray] | None = None
        if payloads is not None:
            if self.size is not None:
                raise InjectError("vary= takes 'size' or 'payload', not both: a payload sets the size. Fix: one of them.")
            head = _headers(pkt)
            self.least = len(head)
            self.payloads = _payload_table(payloads)
            self.pkt = head / Raw(bytes(self.payloads[0].shape[1]))
        elif self.size is not None:
            head = _headers(pkt)
            self.least = len(head)
            spec = self.size
            every = list(spec) if isinstance(spec, (list, range)) else \
                [spec[0], spec[1]] if isinstance(spec, tuple) and len(spec) == 2 else [spec]
            sizes = _values(every, len(every), SIZE, "size")  # checks them, too
            lo, hi = int(sizes.min()), int(sizes.max())
            if lo < self.least:
                raise InjectError(f"vary={{'size': {self.size!r}}}: {lo} bytes is shorter than the headers "
                                  f"({self.least} bytes). Fix: sizes from {self.least}.")
            self.pkt = head / Raw(bytes(hi - self.least))
        self.template = np.frombuffer(bytes(self.pkt), np.uint8)
        built = self.pkt.__class__(bytes(self.pkt))
        self.fields = _fields(built, self.vary)
        self.sums = Checksums(built, kept)
        self.lengths = [(at + LENGTHS[key[0]][0], at + LENGTHS[key[0]][1])
                        for _, at, key in layers(built) if key[0] in LENGTHS]
        self.first = self.rows(0, 1)[0]  # checks vary= before anything is sent

    def __len__(self) -> int:
        return self.count

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows start..stop, and each one's length when sizes vary (the bytes after it are zero)."""
        rows = np.tile(self.template, (stop - start, 1))
        lengths = None
        if self.payloads is not None:  # each row's payload, in turn (or drawn, with seed=)
            table, sizes = self.payloads
            i = np.arange(start, stop, dtype=np.uint64)
            if self.seed is not None:
                i = _mix(i, self.seed, "payload") >> np.uint64(1)
            pick = (i % np.uint64(len(table))).astype(np.int64)
            rows[:, self.least:] = table[pick]
            lengths = self.least + sizes[pick]
        elif self.size is not None:
            lengths = _values(self.size, stop - start, SIZE, "size", start, self.seed).astype(np.int64)
        _fill(rows, self.fields, start, self.seed)
        if lengths is not None:  # each row's own length: zeros after it, length fields that follow it
            rows[np.arange(rows.shape[1]) >= lengths[:, None]] = 0
            for at, minus in self.lengths:
                _put(rows, at, 2, (lengths - minus).astype(np.uint64))
        if self.fields or lengths is not None:
            self.sums.apply(rows, lengths)
        return rows, lengths

    def rows_bytes(self, start: int, stop: int) -> list[bytes]:
        """Frames start..stop as bytes (for the few thousand a trace is matched against)."""
        rows, lengths = self.rows(start, stop)
        if lengths is None:
            return [r.tobytes() for r in rows]
        return [r[:n].tobytes() for r, n in zip(rows, lengths.tolist())]

    def frame(self, i: int) -> bytes:
        rows, lengths = self.rows(i, i + 1)
        return rows[0, :None if lengths is None else int(lengths[0])].tobytes()
