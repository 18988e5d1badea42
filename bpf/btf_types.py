"""C types of a loaded object as ctypes types, from its BTF (read through libbpf's btf__type_by_id).

Maps of libbpf objects get their key and value types from here, with the C field names; the
inspector's record layout too. Big-endian typedefs (__be16, __be32, __be64) become big-endian
ctypes types, so a port or address field reads as the number it means.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from typing import Any

from . import libbpf

# enum btf_kind (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_QUALIFIERS = {VOLATILE, CONST, RESTRICT, TYPE_TAG}
_BIG_ENDIAN = {"__be16", "__be32", "__be64", "__sum16", "__wsum"}
_INTS = {(1, False): ctypes.c_uint8, (1, True): ctypes.c_int8, (2, False): ctypes.c_uint16, (2, True): ctypes.c_int16,
         (4, False): ctypes.c_uint32, (4, True): ctypes.c_int32, (8, False): ctypes.c_uint64, (8, True): ctypes.c_int64}
_FLOATS = {4: ctypes.c_float, 8: ctypes.c_double}


class _Head(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


@dataclasses.dataclass(frozen=True)
class Var:
    """A global variable of a data section (.rodata, .data, .bss): where it is and its type."""

    name: str
    offset: int
    size: int
    ctype: Any


class Btf:
    """One object's BTF (a ``struct btf *`` that libbpf owns)."""

    def __init__(self, btf: int) -> None:
        self.ptr = btf
        self._cache: dict[int, Any] = {}

    def _head(self, type_id: int) -> tuple[_Head, int]:
        addr = libbpf.lib().btf__type_by_id(self.ptr, type_id)
        return _Head.from_address(addr), addr + ctypes.sizeof(_Head)

    def kind(self, type_id: int) -> int:
        return (self._head(type_id)[0].info >> 24) & 0x1F

    def name(self, type_id: int) -> str:
        return (libbpf.lib().btf__name_by_offset(self.ptr, self._head(type_id)[0].name_off) or b"").decode()

    def find(self, name: str, kind: int) -> int:
        return int(libbpf.lib().btf__find_by_name_kind(self.ptr, name.encode(), kind))

    def _words(self, addr: int, n: int) -> list[int]:
        return list((ctypes.c_uint32 * n).from_address(addr))

    def ctype(self, type_id: int) -> Any:
        """The ctypes type of BTF type ``type_id``."""
        if type_id not in self._cache:
            self._cache[type_id] = self._make(type_id)
        return self._cache[type_id]

    def _make(self, type_id: int) -> Any:
        head, extra = self._head(type_id)
        kind, vlen, kflag = (head.info >> 24) & 0x1F, head.info & 0xFFFF, head.info >> 31
        if type_id == 0:
            raise TypeError("void has no size")
        if kind == INT:
            enc = self._words(extra, 1)[0]
            if (enc >> 24) & 4 and head.size_or_type == 1:  # BTF_INT_BOOL
                return ctypes.c_bool
            return _INTS.get((head.size_or_type, bool((enc >> 24) & 1)), ctypes.c_uint8 * head.size_or_type)
        if kind in (ENUM, ENUM64):
            return _INTS.get((head.size_or_type, bool(kflag)), ctypes.c_uint32)
        if kind == FLOAT:
            return _FLOATS.get(head.size_or_type, ctypes.c_uint8 * head.size_or_type)
        if kind == PTR:
            return ctypes.c_uint64
        if kind == TYPEDEF:
            inner = self.ctype(head.size_or_type)
            if self.name(type_id) in _BIG_ENDIAN and hasattr(inner, "__ctype_be__"):
                return inner.__ctype_be__
            return inner
        if kind in _QUALIFIERS:
            return self.ctype(head.size_or_type)
        if kind == ARRAY:
            elem, _, n = self._words(extra, 3)
            return self.ctype(elem) * n
        if kind in (STRUCT, UNION):
            return self._record(type_id, head, extra, kind, vlen, bool(kflag))
        raise TypeError(f"BTF kind {kind} has no value layout")

    def _record(self, type_id: int, head: _Head, extra: int, kind: int, vlen: int, kflag: bool) -> Any:
        name = self.name(type_id) or f"anon_{type_id}"
        fields: list[tuple[Any, ...]] = []
        at = 0  # bytes laid out so far (structs)
        pad = 0
        for i in range(vlen):
            name_off, mtype, off = self._words(extra + 12 * i, 3)
            bits, bit_off = (off >> 24, off & 0xFFFFFF) if kflag else (0, off)
            mname = (libbpf.lib().btf__name_by_offset(self.ptr, name_off) or b"").decode() or f"anon{i}"
            mctype = self.ctype(mtype)
            if kind == STRUCT and not bits and bit_off % 8 == 0 and bit_off // 8 > at:
                fields.append((f"__pad{pad}", ctypes.c_uint8 * (bit_off // 8 - at)))
                pad += 1
            if bits:
                fields.append((mname, mctype, bits))
            else:
                fields.append((mname, mctype))
            if kind == STRUCT:
                at = max(at, (bit_off + (bits or 8 * ctypes.sizeof(mctype)) + 7) // 8)
        base = ctypes.Union if kind == UNION else ctypes.Structure
        cls = type(name, (base,), {"_pack_": 1, "_fields_": fields})
        if ctypes.sizeof(cls) < head.size_or_type:  # tail padding
            cls = type(name, (base,), {"_pack_": 1, "_fields_": [*fields, ("__pad_tail", ctypes.c_uint8 *
                                                                       (head.size_or_type - ctypes.sizeof(cls)))]})
        return cls

    def datasec(self, section: str) -> list[Var]:
        """The variables of a data section (``.rodata``, ``.bss``, ``.data``...)."""
        sec = self.find(section, DATASEC)
        if sec <= 0:
            return []
        head, extra = self._head(sec)
        out = []
        for i in range(head.info & 0xFFFF):
            var, offset, size = self._words(extra + 12 * i, 3)
            vhead, _ = self._head(var)
            out.append(Var(self.name(var), offset, size, self.ctype(vhead.size_or_type)))
        return out

    def func_param(self, func: str) -> str | None:
        """How the first parameter of function ``func`` is spelled in C (``struct xdp_md *``), if known."""
        fid = self.find(func, FUNC)
        if fid <= 0:
            return None
        proto, proto_extra = self._head(self._head(fid)[0].size_or_type)
        if proto.info & 0xFFFF < 1:
            return None
        ptype = self._words(proto_extra, 2)[1]
        if self.kind(ptype) != PTR:
            return None
        target = self._head(ptype)[0].size_or_type
        while target and self.kind(target) in _QUALIFIERS:
            target = self._head(target)[0].size_or_type
        if target == 0:
            return "void *"
        word = {STRUCT: "struct ", UNION: "union ", TYPEDEF: ""}.get(self.kind(target))
        return None if word is None else f"{word}{self.name(target)} *"

    def enum(self, name: str) -> dict[int, str]:
        """The members of C enum ``name`` by value (32-bit enums: ``enum skb_drop_reason``)."""
        tid = self.find(name, ENUM)
        if tid <= 0:
            return {}
        head, extra = self._head(tid)
        words = self._words(extra, 2 * (head.info & 0xFFFF))
        lib = libbpf.lib()
        return {words[i + 1]: (lib.btf__name_by_offset(self.ptr, words[i]) or b"").decode()
                for i in range(0, len(words), 2)}


@functools.cache
def kernel() -> Btf:
    """The running kernel's BTF (/sys/kernel/btf/vmlinux), kept for the process: types refer into it."""
    from pktassert import host

    host.check("kernel BTF")
    btf = libbpf.lib().btf__load_vmlinux_btf()
    if not btf:
        raise host.HostLacks("kernel BTF", f"libbpf cannot read the kernel's BTF ({host.BTF}). Fix: a kernel built "
                                           f"with CONFIG_DEBUG_INFO_BTF=y, and /sys readable.")
    return Btf(btf)
