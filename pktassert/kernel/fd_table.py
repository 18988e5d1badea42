"""A BPF map by fd with ctypes key and value types (from BTF): the table StateMap reads and seeds.

It offers what StateMap uses of a bcc table (Key, Leaf, ttype, [], keys(), items(), len), over
libbpf's map calls, so libbpf objects' maps behave like bcc sources' maps. Per-CPU maps give a
list: one value per possible CPU.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any

from pktassert.kernel import libbpf, map_reset

_PERCPU = {int(t) for t in map_reset._PERCPU}


class FdTable:
    def __init__(self, name: str, fd: int, key_type: Any, value_type: Any) -> None:
        info = map_reset.info(fd)
        self.name, self.fd, self.ttype = name, fd, info.type
        self.Key, self.Leaf = key_type, value_type
        self.max_entries = info.max_entries
        self.percpu = info.type in _PERCPU
        self._cpus = libbpf.possible_cpus()
        # The kernel lays per-CPU values out 8-byte aligned.
        self._stride = (ctypes.sizeof(value_type) + 7) // 8 * 8 if self.percpu else ctypes.sizeof(value_type)

    def _value_buffer(self) -> ctypes.Array:
        return (ctypes.c_uint8 * (self._stride * (self._cpus if self.percpu else 1)))()

    def _error(self, what: str) -> OSError:
        e = ctypes.get_errno()
        return OSError(e, f"{what} on map {self.name}: {os.strerror(e)}")

    def __getitem__(self, key: Any) -> Any:
        buf = self._value_buffer()
        if libbpf.lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), buf) != 0:
            raise KeyError(key)
        if not self.percpu:
            return self.Leaf.from_buffer_copy(buf)
        return [self.Leaf.from_buffer_copy(buf, i * self._stride) for i in range(self._cpus)]

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.percpu:
            buf = self._value_buffer()
            for i, v in enumerate(value):
                ctypes.memmove(ctypes.addressof(buf) + i * self._stride, ctypes.addressof(v), ctypes.sizeof(v))
            ref: Any = buf
        else:
            ref = ctypes.byref(value)
        if libbpf.lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ref, 0) != 0:
            raise self._error("update")

    def __delitem__(self, key: Any) -> None:
        if libbpf.lib().bpf_map_delete_elem(self.fd, ctypes.byref(key)) != 0:
            if ctypes.get_errno() == 2:
                raise KeyError(key)
            raise self._error("delete")

    def keys(self) -> Iterator[Any]:
        key, nxt = None, self.Key()
        while libbpf.lib().bpf_map_get_next_key(self.fd, None if key is None else ctypes.byref(key),
                                                 ctypes.byref(nxt)) == 0:
            key, nxt = nxt, self.Key()
            yield key

    def items(self) -> list[tuple[Any, Any]]:
        out = []
        for k in self.keys():
            try:
                out.append((k, self[k]))
            except KeyError:  # deleted meanwhile
                continue
        return out

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())
