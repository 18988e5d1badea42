"""A filter's map, to read and seed from a test with plain Python values."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from pktassert.errors import PktassertError

PROG_ARRAY = 3  # BPF_MAP_TYPE_PROG_ARRAY: values are programs, given by function name
_DEVMAP_HINT = (" A devmap's value is an interface index of the test's own namespace: the DUT's in the live tier "
                "(xdp.ifindex, xdp.honeypot.ifindex), a throwaway namespace with only lo (1) in the unit tier.")
# What the kernel's refusal most likely means, by map type (BPF_MAP_TYPE_*).
_HINTS = {14: _DEVMAP_HINT, 25: _DEVMAP_HINT,
          PROG_ARRAY: " A program array takes a function name of the filter's source."}


class MapValueError(PktassertError, ValueError):
    """A key or value that does not fit the map's type exactly."""


def _describe(ctype: type) -> str:
    return f"{ctype.__name__} ({ctypes.sizeof(ctype)} bytes)"


def _check_int(ctype: type, value: Any, what: str) -> int:
    """``value`` if it is a whole number that fits ``ctype`` exactly; ctypes would wrap it silently."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MapValueError(f"{what}: {value!r} is not a whole number for {_describe(ctype)}.")
    bits = 8 * ctypes.sizeof(ctype)
    signed = getattr(ctype, "_type_", "B").islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise MapValueError(f"{what}: {value} does not fit {_describe(ctype)}: it takes {lo}..{hi}. "
                            f"Fix: a value in range (the kernel would see it wrapped).")
    return value


def _to(ctype: Any, value: Any, what: str) -> Any:
    """``value`` as ``ctype``: already one, raw bytes of its exact size, a tuple/list of struct fields
    or array items, or a number; anything that would not fit exactly is refused."""
    if isinstance(value, ctype):
        return value
    if isinstance(value, (bytes, bytearray)):
        if len(value) != ctypes.sizeof(ctype):
            raise MapValueError(f"{what}: {len(value)} bytes for {_describe(ctype)}. Fix: exactly "
                                f"{ctypes.sizeof(ctype)} bytes, or a number or tuple of fields.")
        return ctype.from_buffer_copy(bytes(value))
    if issubclass(ctype, ctypes.Structure):
        fields = [(n, t) for n, t, *_ in ctype._fields_ if not n.startswith("__pad")]  # bcc's alignment padding
        items = value if isinstance(value, (tuple, list)) else (value,)
        if len(items) != len(fields):
            raise MapValueError(f"{what}: {len(items)} values for struct {ctype.__name__} of {len(fields)} fields "
                                f"({', '.join(n for n, _ in fields)}).")
        return ctype(**{n: _to(t, v, f"{what}.{n}") for (n, t), v in zip(fields, items)})
    if issubclass(ctype, ctypes.Array):
        if not isinstance(value, (tuple, list)) or len(value) != ctype._length_:
            raise MapValueError(f"{what}: give {ctype._length_} items or {ctypes.sizeof(ctype)} bytes for "
                                f"{_describe(ctype)}, not {value!r}.")
        return ctype(*(_to(ctype._type_, v, f"{what}[{i}]") for i, v in enumerate(value)))
    return ctype(_check_int(ctype, value, what))


def _from(value: Any) -> Any:
    """Plain numbers for scalar keys and values; structs and arrays as bcc gives them."""
    return value.value if isinstance(value, ctypes._SimpleCData) else value


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
        k, v = _to(self.table.Key, key, f"{self.name} key"), _to(self.table.Leaf, value, f"{self.name} value")
        with self._writing():  # where interface indexes in the value are resolved
            try:
                self.table[k] = v
            except Exception as e:  # noqa: BLE001 -- bcc raises plain Exception with the kernel's errno text
                hint = _HINTS.get(self.table.ttype, "")
                raise MapValueError(f"{self.name}: the kernel refused {key!r} -> {value!r}: {e}.{hint}") from None

    def __getitem__(self, key: Any) -> Any:
        return _from(self.table[_to(self.table.Key, key, f"{self.name} key")])

    def __delitem__(self, key: Any) -> None:
        k = _to(self.table.Key, key, f"{self.name} key")
        with self._writing():
            del self.table[k]

    def __contains__(self, key: Any) -> bool:
        try:
            self.table[_to(self.table.Key, key, f"{self.name} key")]
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
        return f"<map {self.name}: {len(self)} entries>"
