"""Expected packets: compared field by field and layer by layer, with scapy's field names (IPv4 and
IPv6 alike), the fields that do not matter named: ``expect(pkt, ignore=["IP.chksum", "ttl"])`` or a
``Mask``. ``assert out == expect(...)`` fails with the fields that differ, and nothing else."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Packet, Raw


class Mask:
    """Don't-care fields by name: ``"IP.chksum"`` (that layer's), ``"ttl"`` (any layer's), ``"IP#2.src"``
    (the second IP from the outside), ``"Raw"`` (a whole layer). ``Mask("ttl") | Mask("IP.id")``."""

    def __init__(self, *fields: str) -> None:
        self.fields = frozenset(fields)

    def __or__(self, other: Mask) -> Mask:
        return Mask(*self.fields, *other.fields)

    def ignores(self, layer: str, field: str | None) -> bool:
        """Whether ``field`` of ``layer`` ("IP", "IP#2") is don't-care; ``field=None``: the whole layer."""
        bare = layer.split("#")[0]
        keys = {layer, bare} if field is None else {field, f"{layer}.{field}", f"{bare}.{field}"}
        return bool(keys & self.fields)

    def __repr__(self) -> str:
        return f"Mask({', '.join(map(repr, sorted(self.fields)))})"


def _layers(pkt: Packet) -> list[tuple[str, Packet]]:
    out, seen, layer = [], dict[str, int](), pkt
    while not isinstance(layer, NoPayload):
        name = type(layer).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", layer))
        layer = layer.payload
    return out


def _show(layer: Packet, field: str, value: Any) -> str:
    try:
        return str(layer.get_field(field).i2repr(layer, value))
    except Exception:  # noqa: BLE001 -- a field scapy cannot print: its value as Python shows it
        return repr(value)


NOTHING = Mask()


def diff(got: Packet | bytes, want: Packet | bytes, mask: Mask = NOTHING) -> list[str]:
    """The differences, one line each, between two frames as built (lengths and checksums filled in)."""
    g, w = Ether(bytes(got)), Ether(bytes(want))
    gl, wl = _layers(g), _layers(w)
    lines: list[str] = []
    for (_, a), (wname, b) in zip(gl, wl):
        if type(a) is not type(b):
            lines.append(f"{wname}: got a {type(a).__name__} layer where {type(b).__name__} was expected")
            return lines
        if mask.ignores(wname, None):
            continue
        if isinstance(b, Raw):
            ga, wa = bytes(a.load), bytes(b.load)
            if ga != wa:
                at = next((i for i, (x, y) in enumerate(zip(ga, wa)) if x != y), min(len(ga), len(wa)))
                lines.append(f"{wname}: {len(ga)} bytes, expected {len(wa)}; first difference at byte {at}: "
                             f"got {ga[at:at + 8].hex() or 'nothing'}, expected {wa[at:at + 8].hex() or 'nothing'}")
            continue
        for f in b.fields_desc:
            if mask.ignores(wname, f.name):
                continue
            va, vb = a.getfieldval(f.name), b.getfieldval(f.name)
            if va != vb:
                lines.append(f"{wname}.{f.name}: got {_show(a, f.name, va)}, expected {_show(b, f.name, vb)}")
    if len(gl) != len(wl):
        extra = gl[len(wl):] if len(gl) > len(wl) else wl[len(gl):]
        names = ", ".join(n for n, _ in extra)
        lines.append(f"got {'more' if len(gl) > len(wl) else 'fewer'} layers than expected: "
                     f"{'also' if len(gl) > len(wl) else 'missing'} {names}")
    return lines


class _Expected:
    """Mixed into a subclass of the expected packet's class, so that ``out == expected`` asks it first."""

    mask: Mask

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Packet, bytes)):
            return NotImplemented
        return not diff(other, bytes(self), self.mask)  # type: ignore[call-overload]

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]


@functools.cache
def _expected_class(base: type[Packet]) -> type[Packet]:
    return type(f"Expected{base.__name__}", (_Expected, base), {})


def expect(packet: Packet, ignore: Iterable[str] | Mask = ()) -> Packet:
    """``packet`` as an expected frame: equal to any frame whose fields match, but for ``ignore``."""
    frame = Ether(bytes(packet)) if not isinstance(packet, Ether) else packet
    out = _expected_class(type(frame))(bytes(frame))
    out.mask = ignore if isinstance(ignore, Mask) else Mask(*ignore)  # type: ignore[attr-defined]
    return out


def explain(left: Any, right: Any) -> list[str] | None:
    """Assertion lines for ``left == right`` when both are frames."""
    if not (isinstance(left, Packet) and isinstance(right, Packet)):
        return None
    mask = getattr(right, "mask", None) or getattr(left, "mask", None) or NOTHING
    got, want = (right, left) if isinstance(left, _Expected) else (left, right)
    lines = diff(got, want, mask)
    if not lines:
        return None
    ignored = f" (ignoring {', '.join(sorted(mask.fields))})" if mask.fields else ""
    return [f"the packets differ in {len(lines)} field{'s' if len(lines) > 1 else ''}{ignored}:", *lines]
