"""A filter's map, to read and seed from a test with plain Python values."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import ipaddress
import keyword
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from pktassert.errors import PktassertError
from pktassert.kernel.btf_types import BitField
from pktassert.kernel.libbpf import possible_cpus
from pktassert.kernel.map_reset import MapType

PROG_ARRAY = MapType.PROG_ARRAY  # values are programs, given by function name
_DEVMAP_HINT = (" A devmap's value is an interface index of the test's own namespace: the DUT's in the live tier "
                "(xdp.ifindex, xdp.honeypot.ifindex), a throwaway namespace with only lo (1) in the unit tier.")
# What the kernel's refusal most likely means, by map type (BPF_MAP_TYPE_*).
_HINTS = {MapType.DEVMAP: _DEVMAP_HINT, MapType.DEVMAP_HASH: _DEVMAP_HINT,
          PROG_ARRAY: " A program array takes a function name of the filter's source."}


class PerCpu(list):  # type: ignore[type-arg]
    """A per-CPU map's entry: one value per possible CPU. sum() adds them (numbers only)."""

    def sum(self) -> Any:
        return sum(self)


_SHOWN = 20  # entries a printed map shows


class MapValueError(PktassertError, ValueError):
    """A key or value that does not fit the map's type exactly."""


def _describe(ctype: Any) -> str:
    if isinstance(ctype, BitField):
        return f"the {ctype.bits}-bit field {ctype.name}"
    return f"{ctype.__name__} ({ctypes.sizeof(ctype)} bytes)"


def _check_int(ctype: Any, value: Any, what: str) -> int:
    """``value`` if it is a whole number that fits ``ctype`` (or a bitfield) exactly; ctypes would wrap it silently."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MapValueError(f"{what}: {value!r} is not a whole number for {_describe(ctype)}.")
    if isinstance(ctype, BitField):
        lo, hi = ctype.lo, ctype.hi
    else:
        bits = 8 * ctypes.sizeof(ctype)
        signed = getattr(ctype, "_type_", "B").islower()
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise MapValueError(f"{what}: {value} does not fit {_describe(ctype)}: it takes {lo}..{hi}. "
                            f"Fix: a value in range (the kernel would see it wrapped).")
    return value


def _ip(value: str, ctype: Any, what: str) -> Any:
    """An IP address written as text, into a 4- or 16-byte field as the packet carries it
    (network order), or a prefix ("198.51.100.0/24") into an LPM trie key {prefixlen, addr}."""
    size = ctypes.sizeof(ctype)
    lpm = issubclass(ctype, ctypes.Structure) and len(_fields(ctype)) == 2
    if size not in (4, 16) and not lpm:
        raise MapValueError(f"{what}: {value!r} is not a whole number for {_describe(ctype)} (text is read as an IP "
                            f"address, for 4- and 16-byte fields only).")
    try:
        if "/" in value and lpm:
            net = ipaddress.ip_network(value, strict=False)
            (pname, ptype), (aname, atype) = _fields(ctype)
            return ctype(**{pname: _check_int(ptype, net.prefixlen, what),
                            aname: _ip(str(net.network_address), atype, what)})
        addr = ipaddress.ip_address(value)
    except ValueError as e:
        raise MapValueError(f"{what}: {value!r} is not an IP address or prefix ({e}).") from None
    if len(addr.packed) != size:
        raise MapValueError(f"{what}: {value!r} is {len(addr.packed)} bytes, the field {_describe(ctype)}.")
    return ctype.from_buffer_copy(addr.packed)


def _fields(ctype: Any) -> list[tuple[str, Any]]:
    """The C members: as laid out from BTF (bitfields included), else the fields but padding."""
    members = getattr(ctype, "_members_", None)
    if members is not None:
        return list(members)
    return [(n, t) for n, t, *_ in ctype._fields_ if not n.startswith("__pad")]  # alignment padding


def to_ctype(ctype: Any, value: Any, what: str) -> Any:
    """``value`` as ``ctype``: already one, raw bytes of its exact size, a tuple/list/dict of struct
    fields or array items, an IP address as text, or a number; anything that would not fit exactly
    is refused."""
    if isinstance(ctype, BitField):
        return _check_int(ctype, value, what)
    if isinstance(value, ctype):
        return value
    if isinstance(value, str):
        return _ip(value, ctype, what)
    if isinstance(value, (bytes, bytearray)):
        if len(value) != ctypes.sizeof(ctype):
            raise MapValueError(f"{what}: {len(value)} bytes for {_describe(ctype)}. Fix: exactly "
                                f"{ctypes.sizeof(ctype)} bytes, or a number or tuple of fields.")
        return ctype.from_buffer_copy(bytes(value))
    unlaid = getattr(ctype, "_unlaid_", None)
    if unlaid:  # raw bytes only: anything else would be a guess at where the fields are
        raise MapValueError(f"{what}: {unlaid}; pktassert reads it as its {ctypes.sizeof(ctype)} raw bytes. Fix: "
                            f"give exactly {ctypes.sizeof(ctype)} bytes, laid out as the C compiler lays the type out.")
    if issubclass(ctype, (ctypes.Structure, ctypes.Union)):
        fields = _fields(ctype)
        if isinstance(value, dict):
            unknown = set(value) - {n for n, _ in fields}
            if unknown:
                raise MapValueError(f"{what}: struct {ctype.__name__} has no field {', '.join(sorted(unknown))}; "
                                    f"its fields: {', '.join(n for n, _ in fields)}.")
            return ctype(**{n: to_ctype(t, value[n], f"{what}.{n}") for n, t in fields if n in value})
        items = value if isinstance(value, (tuple, list)) else (value,)
        if len(items) != len(fields):
            raise MapValueError(f"{what}: {len(items)} values for struct {ctype.__name__} of {len(fields)} fields "
                                f"({', '.join(n for n, _ in fields)}).")
        return ctype(**{n: to_ctype(t, v, f"{what}.{n}") for (n, t), v in zip(fields, items)})
    if issubclass(ctype, ctypes.Array):
        if not isinstance(value, (tuple, list)) or len(value) != ctype._length_:
            raise MapValueError(f"{what}: give {ctype._length_} items or {ctypes.sizeof(ctype)} bytes for "
                                f"{_describe(ctype)}, not {value!r}.")
        return ctype(*(to_ctype(ctype._type_, v, f"{what}[{i}]") for i, v in enumerate(value)))
    return ctype(_check_int(ctype, value, what))


_ADDRESS = re.compile(r"(?:^|_)(?:s|d)?(?:addr|ip|ip6|saddr|daddr|src_ip|dst_ip)\d*$", re.IGNORECASE)


def _from(value: Any, name: str = "") -> Any:
    """Plain Python values: numbers, structs as named tuples of their fields, byte arrays as bytes,
    other arrays as lists, and 4- or 16-byte fields named like addresses as IP address text."""
    if isinstance(value, ctypes._SimpleCData):
        if name and _ADDRESS.search(name) and ctypes.sizeof(value) == 4:
            return str(ipaddress.IPv4Address(bytes(value)))
        return value.value
    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        fields = _fields(type(value))
        if not fields:
            return value
        record = _record_type(type(value).__name__, tuple(n for n, _ in fields))
        return record(*(_field(getattr(value, n), n, t) for n, t in fields))
    if isinstance(value, ctypes.Array):
        if issubclass(value._type_, (ctypes.c_uint8, ctypes.c_char, ctypes.c_int8)) or value._type_ in (ctypes.c_ubyte,):
            raw = bytes(value)
            if name and _ADDRESS.search(name) and len(raw) in (4, 16):
                return str(ipaddress.ip_address(raw))
            return raw
        return [_from(v) for v in value]
    if isinstance(value, list):  # per-CPU values
        return PerCpu(_from(v, name) for v in value)
    return value


def _field(value: Any, name: str, ctype: Any) -> Any:
    """A struct field as ctypes hands it over (a plain int for scalars), made plain like _from()."""
    if isinstance(ctype, BitField):
        return value
    if isinstance(value, int) and ctypes.sizeof(ctype) == 4 and _ADDRESS.search(name):
        big = getattr(ctype, "__ctype_be__", None) is ctype  # __be32: the number is the address
        return str(ipaddress.IPv4Address(value if big else value.to_bytes(4, "little")))
    return _from(value, name)


@functools.cache
def _record_type(name: str, fields: tuple[str, ...]) -> Any:
    safe = [f if f.isidentifier() and not f.startswith("_") and not keyword.iskeyword(f) else f"f{i}"
            for i, f in enumerate(fields)]
    typename = name if name.isidentifier() and not keyword.iskeyword(name) else "Struct"
    return collections.namedtuple(typename, safe)  # type: ignore[misc]


class StateMap:
    """One of the filter's maps (a bcc table) by name: ``m[8080] = 1``, ``m[key]``, ``len(m)``, ``dict(m.items())``.

    Keys and values may be what bcc takes (ctypes) or plain ints, bytes, or tuples of struct fields.
    """

    def __init__(self, name: str, table: Any, writing: Callable[[], ContextManager[None]] = contextlib.nullcontext,
                 program_fd: Callable[[str], int] | None = None) -> None:
        self.name, self.table = name, table
        self._writing, self._program_fd = writing, program_fd

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, str) and self.table.ttype == PROG_ARRAY and self._program_fd is not None:
            value = self._program_fd(value)
        k = to_ctype(self.table.Key, key, f"{self.name} key")
        if getattr(self.table, "percpu", False):
            v: Any = self._per_cpu(value)
        else:
            v = to_ctype(self.table.Leaf, value, f"{self.name} value")
        with self._writing():  # where interface indexes in the value are resolved
            try:
                self.table[k] = v
            except Exception as e:  # noqa: BLE001 -- bcc raises plain Exception with the kernel's errno text
                hint = _HINTS.get(self.table.ttype, "")
                raise MapValueError(f"{self.name}: the kernel refused {key!r} -> {value!r}: {e}.{hint}") from None

    def _per_cpu(self, value: Any) -> list[Any]:
        cpus = possible_cpus()
        if not isinstance(value, (list, tuple)) or len(value) != cpus:
            raise MapValueError(f"{self.name} is a per-CPU map: give a list of {cpus} values, one per possible CPU "
                                f"(e.g. [0] * {cpus}), not {value!r}.")
        return [to_ctype(self.table.Leaf, v, f"{self.name} value[{i}]") for i, v in enumerate(value)]

    def __getitem__(self, key: Any) -> Any:
        return _from(self.table[to_ctype(self.table.Key, key, f"{self.name} key")])

    def __delitem__(self, key: Any) -> None:
        k = to_ctype(self.table.Key, key, f"{self.name} key")
        with self._writing():
            del self.table[k]

    def __contains__(self, key: Any) -> bool:
        try:
            self.table[to_ctype(self.table.Key, key, f"{self.name} key")]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        try:
            return len(self.table)
        except NotImplementedError:  # bcc's LPM trie: count its keys
            return sum(1 for _ in self.table.keys())

    def __iter__(self) -> Iterator[Any]:
        return (_from(k) for k in self.table.keys())

    def items(self) -> list[tuple[Any, Any]]:
        return [(_from(k), _from(v)) for k, v in self.table.items()]

    @property
    def Key(self) -> type:
        return self.table.Key

    @property
    def Leaf(self) -> type:
        return self.table.Leaf

    def __repr__(self) -> str:
        items = self.items()
        shown = ", ".join(f"{k!r}: {v!r}" for k, v in items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
        return f"<map {self.name}: {len(items)} entries {{{shown}}}>"
