"""A libbpf filter's global variables (.rodata, .data, .bss) by name, as plain Python values."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, MutableMapping
from typing import Any

from pktassert.errors import PktassertError
from pktassert.kernel import libbpf, map_reset
from pktassert.programs.state_map import _from, to_ctype


class Globals(MutableMapping[str, Any]):
    def __init__(self, loaded: Any) -> None:
        data_maps = getattr(loaded, "data_maps", None)
        if data_maps is None:
            raise PktassertError(f"{loaded.subject.name} is a bcc source: bcc programs have no global variables (their "
                                 f"state is in maps). Fix: use xdp.map(name).")
        self._sections = data_maps()
        self._vars = {v.name: (section, fd, v) for section, (fd, vs) in self._sections.items() for v in vs}
        self._label = loaded.subject.name

    def _image(self, fd: int) -> ctypes.Array:
        key, buf = ctypes.c_uint32(0), ctypes.create_string_buffer(map_reset.info(fd).value_size)
        if libbpf.lib().bpf_map_lookup_elem(fd, ctypes.byref(key), buf) != 0:
            raise PktassertError(f"cannot read the globals of {self._label}")
        return buf

    def _where(self, name: str) -> tuple[str, int, Any]:
        if name not in self._vars:
            raise KeyError(f"{self._label} has no global variable {name!r}; its globals: {', '.join(self._vars) or 'none'}")
        return self._vars[name]

    def __getitem__(self, name: str) -> Any:
        _, fd, var = self._where(name)
        buf = self._image(fd)
        return _from(var.ctype.from_buffer_copy(buf, var.offset), name)

    def __setitem__(self, name: str, value: Any) -> None:
        section, fd, var = self._where(name)
        if section == ".rodata" or section.startswith(".rodata."):
            raise PktassertError(f"{name} is a const volatile (.rodata) global of {self._label}: the kernel froze it at "
                                 f"load. Fix: set it before load with @pytest.mark.xdp(..., globals={{{name!r}: ...}}).")
        buf = self._image(fd)
        fitted = to_ctype(var.ctype, value, f"globals[{name!r}]")
        ctypes.memmove(ctypes.addressof(buf) + var.offset, ctypes.addressof(fitted), var.size)
        key = ctypes.c_uint32(0)
        if libbpf.lib().bpf_map_update_elem(fd, ctypes.byref(key), buf, 0) != 0:
            raise PktassertError(f"cannot write global {name} of {self._label}")

    def __delitem__(self, name: str) -> None:
        raise PktassertError("global variables cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def __repr__(self) -> str:
        return "<globals " + ", ".join(f"{n}={self[n]!r}" for n in self._vars) + ">"
