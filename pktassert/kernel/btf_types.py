"""C types of a loaded object as ctypes types, from its BTF (read through libbpf's btf__type_by_id).

Maps of libbpf objects get their key and value types from here, with the C field names; the
inspector's record layout too. Big-endian typedefs (__be16, __be32, __be64) become big-endian
ctypes types, so a port or address field reads as the number it means. Structs and unions are laid
out member by member at the bit BTF gives (bitfields, padding and all), and are exactly BTF's size.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import sys
from typing import Any

from pktassert.errors import HostLacks
from pktassert.kernel import libbpf
from pktassert.kernel.elf_entry import malformed

# enum btf_kind (include/uapi/linux/btf.h)
BTF = "/sys/kernel/btf/vmlinux"  # the running kernel's types


def missing() -> str | None:
    """Why the running kernel's BTF cannot be read, or None."""
    if os.path.exists(BTF):
        return None
    return (f"the kernel's BTF ({BTF}) is missing: libbpf filters, CO-RE, the dut fixture and drop reason names take "
            f"the kernel's types from it. Fix: a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's, Ubuntu's and "
            f"Fedora's are), and /sys mounted (a container: --privileged, or -v /sys:/sys:ro).")


INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
QUALIFIERS = {VOLATILE, CONST, RESTRICT, TYPE_TAG}
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


class _Unlaid(Exception):
    """A layout BTF describes that ctypes cannot hold exactly (no C compiler makes one)."""


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str
    ctype: Any          # None for a bitfield
    bit_off: int
    bits: int           # 0: not a bitfield
    signed: bool


class BitField:
    """A bitfield of a struct built from BTF: ``bits`` bits of the byte array field ``storage``, read
    and written as a number. Not ctypes' own bitfields: their packing is the compiler's guess, BTF
    says where each one is."""

    def __init__(self, name: str, storage: str, nbytes: int, rel: int, bits: int, signed: bool) -> None:
        self.name, self.storage, self.bits, self.signed = name, storage, bits, signed
        # BTF counts bits from the storage's first byte: its low bit (little-endian) or its high bit.
        self.shift = rel if sys.byteorder == "little" else 8 * nbytes - rel - bits
        self.mask = (1 << bits) - 1
        self.lo, self.hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, self.mask)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = (int.from_bytes(bytes(getattr(obj, self.storage)), sys.byteorder) >> self.shift) & self.mask
        return value - (1 << self.bits) if self.signed and value >> (self.bits - 1) else value

    def __set__(self, obj: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise ValueError(f"{value!r} does not fit the {self.bits}-bit field {self.name} ({self.lo}..{self.hi})")
        store = getattr(obj, self.storage)
        raw = int.from_bytes(bytes(store), sys.byteorder) & ~(self.mask << self.shift)
        raw |= (value & self.mask) << self.shift
        ctypes.memmove(store, raw.to_bytes(len(store), sys.byteorder), len(store))

    def __repr__(self) -> str:
        return f"<{self.bits}-bit field {self.name}>"


def _layout(name: str, size: int, union: bool, members: list[_Member]) -> Any:
    """A ctypes struct or union with every member at the byte BTF puts it: packed, gaps filled with
    ``__pad`` byte arrays, each run of bitfields that share bytes in a ``__bits`` byte array whose
    BitField properties read and write them. ``_members_`` lists the C members in order."""
    taken = {m.name for m in members}

    def fresh(prefix: str) -> str:
        n = 0
        while f"{prefix}{n}" in taken:
            n += 1
        taken.add(f"{prefix}{n}")
        return f"{prefix}{n}"

    bitfields = [m for m in members if m.bits]
    runs: list[list[Any]] = []  # [first byte, end byte, its bitfields]: bitfields that share bytes
    for m in sorted(bitfields, key=lambda m: m.bit_off):
        lo, hi = (0 if union else m.bit_off // 8), (m.bit_off + m.bits + 7) // 8
        if runs and lo < runs[-1][1] and not union:  # in a union each bitfield is its own, at byte 0
            runs[-1][1] = max(runs[-1][1], hi)
            runs[-1][2].append(m)
        else:
            runs.append([lo, hi, [m]])
    attrs: dict[str, Any] = {}
    items: list[tuple[int, int, str, Any]] = []  # (first byte, end byte, field name, ctype)
    for lo, hi, inside in runs:
        sname = fresh("__bits")
        items.append((lo, hi, sname, ctypes.c_uint8 * (hi - lo)))
        for m in inside:
            attrs[m.name] = BitField(m.name, sname, hi - lo, m.bit_off - 8 * lo, m.bits, m.signed)
    items += [(m.bit_off // 8, m.bit_off // 8 + ctypes.sizeof(m.ctype), m.name, m.ctype) for m in members if not m.bits]
    fields: list[tuple[str, Any]] = []
    at = 0
    for lo, hi, fname, ctype in sorted(items, key=lambda it: (it[0], it[1])):
        if union and lo:
            raise _Unlaid(f"member {fname} is at byte {lo} of a union")
        if not union and lo < at:
            raise _Unlaid(f"member {fname} at byte {lo} overlaps {fields[-1][0]}, which ends at byte {at}")
        if not union and lo > at:
            fields.append((fresh("__pad"), ctypes.c_uint8 * (lo - at)))
        fields.append((fname, ctype))
        at = max(at, hi)
    if at > size:
        raise _Unlaid(f"its members take {at} bytes, BTF gives it {size}")
    if at < size or (union and not fields):  # tail padding
        fields.append((fresh("__pad"), ctypes.c_uint8 * (size - (0 if union else at))))
    attrs.update(_pack_=1, _fields_=fields, _members_=[(m.name, attrs.get(m.name, m.ctype)) for m in members])
    return type(name, (ctypes.Union if union else ctypes.Structure,), attrs)


def _opaque(name: str, what: str, size: int, why: str) -> Any:
    """What a layout ctypes cannot hold becomes: its raw bytes, exact; anything but bytes is refused
    (state_map.to_ctype) with ``_unlaid_`` as the reason."""
    return type(name, (ctypes.c_uint8 * size,), {"_unlaid_": f"{what} cannot be laid out from its BTF ({why})"})


class Btf:
    """One object's BTF (a ``struct btf *`` that libbpf owns); ``label`` names the object in errors."""

    def __init__(self, btf: int | None, label: str = "the BTF") -> None:
        if not btf:  # libbpf drops a .BTF it cannot parse, with only a warning: bpf_object__btf() is NULL
            raise malformed(label, "libbpf could not read its BTF (.BTF) and dropped it")
        self.ptr, self.label = btf, label
        self._cache: dict[int, Any] = {}

    def _head(self, type_id: int) -> tuple[_Head, int]:
        addr = libbpf.lib().btf__type_by_id(self.ptr, type_id)
        if not addr:
            raise malformed(self.label, f"its BTF refers to type [{type_id}], which it does not have")
        return _Head.from_address(addr), addr + ctypes.sizeof(_Head)

    def kind(self, type_id: int) -> int:
        return (self._head(type_id)[0].info >> 24) & 0x1F

    def name(self, type_id: int) -> str:
        return (libbpf.lib().btf__name_by_offset(self.ptr, self._head(type_id)[0].name_off) or b"").decode(errors="replace")

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
        if kind in QUALIFIERS:
            return self.ctype(head.size_or_type)
        if kind == ARRAY:
            elem, _, n = self._words(extra, 3)
            try:
                return self.ctype(elem) * n
            except OverflowError:
                raise TypeError(f"an array of {n} elements is too large") from None
        if kind in (STRUCT, UNION):
            return self._record(type_id, head, extra, kind, vlen, bool(kflag))
        raise TypeError(f"BTF kind {kind} has no value layout")

    def _resolve(self, type_id: int) -> int:
        """``type_id`` past typedefs and qualifiers."""
        while type_id and self.kind(type_id) in QUALIFIERS | {TYPEDEF}:
            type_id = self._head(type_id)[0].size_or_type
        return type_id

    def _members(self, extra: int, vlen: int, kflag: bool) -> list[_Member]:
        """A struct's or union's members with their bit offsets; bitfields in either BTF encoding."""
        out = []
        for i in range(vlen):
            name_off, mtype, off = self._words(extra + 12 * i, 3)
            mname = (libbpf.lib().btf__name_by_offset(self.ptr, name_off) or b"").decode(errors="replace")
            bits, bit_off = (off >> 24, off & 0xFFFFFF) if kflag else (0, off)
            base = self._resolve(mtype)
            bhead, bextra = self._head(base)
            bkind = (bhead.info >> 24) & 0x1F
            signed = bool(bhead.info >> 31) if bkind in (ENUM, ENUM64) else False
            if bkind == INT:
                enc = self._words(bextra, 1)[0]
                signed = bool((enc >> 24) & 1)
                if not kflag and ((enc & 0xFF) != 8 * bhead.size_or_type or (enc >> 16) & 0xFF):
                    bits, bit_off = enc & 0xFF, bit_off + ((enc >> 16) & 0xFF)  # kind_flag clear: the INT says
            if bits:
                if mname:  # an unnamed bitfield is only padding
                    out.append(_Member(mname, None, bit_off, bits, signed))
                continue
            if bit_off % 8:
                raise _Unlaid(f"member {mname or i} starts at bit {bit_off}, inside a byte, and is no bitfield")
            out.append(_Member(mname or f"anon{i}", self.ctype(mtype), bit_off, 0, signed))
        return out

    def _record(self, type_id: int, head: _Head, extra: int, kind: int, vlen: int, kflag: bool) -> Any:
        name = self.name(type_id) or f"anon_{type_id}"
        what, size = f"{'union' if kind == UNION else 'struct'} {name}", head.size_or_type
        try:
            cls = _layout(name, size, kind == UNION, self._members(extra, vlen, kflag))
        except (_Unlaid, TypeError) as e:
            return _opaque(name, what, size, str(e))
        if ctypes.sizeof(cls) != size:  # no layout reaches a map unless it is the kernel's, byte for byte
            return _opaque(name, what, size, f"laid out in {ctypes.sizeof(cls)} bytes, BTF says {size}")
        return cls

    def map_types(self, name: str) -> tuple[int, int]:
        """The key and value type ids map ``name`` declares in .maps (``__type(key, int)``), 0 where it
        declares none. libbpf forgets them (bpf_map__btf_key_type_id() gives 0) for the map types the
        kernel takes no BTF for: devmaps, cpumaps, sockmaps, xskmaps, maps of maps, queues..."""
        sec = self.find(".maps", DATASEC)
        if sec <= 0:
            return 0, 0
        head, extra = self._head(sec)
        for i in range(head.info & 0xFFFF):
            var = self._words(extra + 12 * i, 1)[0]
            if self.name(var) != name:
                continue
            shead, sextra = self._head(self._resolve(self._head(var)[0].size_or_type))
            if (shead.info >> 24) & 0x1F != STRUCT:
                return 0, 0
            ids = {}
            for j in range(shead.info & 0xFFFF):
                name_off, mtype, _ = self._words(sextra + 12 * j, 3)
                mname = (libbpf.lib().btf__name_by_offset(self.ptr, name_off) or b"").decode(errors="replace")
                if mname in ("key", "value") and self.kind(mtype) == PTR:  # __type(): a pointer to the type
                    ids[mname] = self._head(mtype)[0].size_or_type
            return ids.get("key", 0), ids.get("value", 0)
        return 0, 0

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
            try:
                ctype = self.ctype(vhead.size_or_type)
            except (TypeError, _Unlaid) as e:  # no value layout (the kernel refuses it at load): its bytes
                ctype = _opaque(self.name(var), f"global {self.name(var)}", size, str(e))
            out.append(Var(self.name(var), offset, size, ctype))
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
        while target and self.kind(target) in QUALIFIERS:
            target = self._head(target)[0].size_or_type
        if target == 0:
            return "void *"
        word = {STRUCT: "struct ", UNION: "union ", TYPEDEF: ""}.get(self.kind(target))
        if word is not None and not self.name(target).isidentifier():  # it is spelled in our inspector's C
            raise malformed(self.label, f"the argument of {func}() is of a type named {self.name(target)!r}, no C name")
        return None if word is None else f"{word}{self.name(target)} *"

    def enum(self, name: str) -> dict[int, str]:
        """The members of C enum ``name`` by value (32-bit enums: ``enum skb_drop_reason``)."""
        tid = self.find(name, ENUM)
        if tid <= 0:
            return {}
        head, extra = self._head(tid)
        words = self._words(extra, 2 * (head.info & 0xFFFF))
        lib = libbpf.lib()
        return {words[i + 1]: (lib.btf__name_by_offset(self.ptr, words[i]) or b"").decode(errors="replace")
                for i in range(0, len(words), 2)}


@functools.cache
def kernel() -> Btf:
    """The running kernel's BTF (/sys/kernel/btf/vmlinux), kept for the process: types refer into it."""
    why = missing()
    if why:
        raise HostLacks("kernel BTF", why)
    btf = libbpf.lib().btf__load_vmlinux_btf()
    if not btf:
        raise HostLacks("kernel BTF", f"libbpf cannot read the kernel's BTF ({BTF}). Fix: a kernel built "
                                           f"with CONFIG_DEBUG_INFO_BTF=y, and /sys readable.")
    return Btf(btf)
