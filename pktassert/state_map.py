"""A filter's map, to read and seed from a test with plain Python values."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Callable, ContextManager, Iterator

PROG_ARRAY = 3  # BPF_MAP_TYPE_PROG_ARRAY: values are programs, given by function name


def _to(ctype: type, value: Any) -> Any:
    """``value`` as ``ctype``: already one, raw bytes, a tuple of struct fields, or a number."""
    if isinstance(value, ctype):
        return value
    if isinstance(value, (bytes, bytearray)):
        return ctype.from_buffer_copy(bytes(value))
    if isinstance(value, tuple):
        return ctype(*value)
    return ctype(value)


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
        k, v = _to(self.table.Key, key), _to(self.table.Leaf, value)
        with self._writing():  # where interface indexes in the value are resolved
            self.table[k] = v

    def __getitem__(self, key: Any) -> Any:
        return _from(self.table[_to(self.table.Key, key)])

    def __delitem__(self, key: Any) -> None:
        k = _to(self.table.Key, key)
        with self._writing():
            del self.table[k]

    def __contains__(self, key: Any) -> bool:
        try:
            self.table[_to(self.table.Key, key)]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[Any]:
        return (_from(k) for k in self.table.keys())

    def items(self) -> list[tuple[Any, Any]]:
        return [(_from(k), _from(v)) for k, v in self.table.items()]

    @property
    def Key(self) -> type:  # noqa: N802 (bcc's name)
        return self.table.Key

    @property
    def Leaf(self) -> type:  # noqa: N802
        return self.table.Leaf

    def __repr__(self) -> str:
        return f"<map {self.name}: {len(self)} entries>"
