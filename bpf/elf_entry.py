"""Move one program of a BPF ELF object into ``.text``, so that our inspector can call it.

libbpf calls only subprograms that live in ``.text`` ("bad call relo" otherwise), and a program's
entry lives in its own section (``SEC("xdp")``). No tool moves a function between sections (objcopy
renames whole sections; libbpf's static linker keeps them), so this does, on the relocatable object:

- the function's bytes are cut out of its section and appended to ``.text`` (made if absent);
- its symbols (the function and clang's local labels inside it) follow it;
- its relocations move from ``.rel<section>`` to ``.rel.text``, offsets rebased;
- its BTF.ext records (func_info, line_info, CO-RE relocations) move to the ``.text`` group.

The instructions are not changed by a single bit: the kernel runs the user's code as compiled.
Everything after the cut in the old section shifts down with its symbols, relocations and BTF.ext
records, so the object's other programs stay programs. DWARF is left as it was: the static linker
drops it (it keeps BTF, which carries the line info verifier messages need).
"""

from __future__ import annotations

import dataclasses
import struct

from pktassert.errors import ProgramError

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
SHT_SYMTAB, SHT_STRTAB, SHT_REL, SHT_PROGBITS = 2, 3, 9, 1
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STT_FUNC = 2
EM_BPF = 247
ET_REL = 1
BTF_MAGIC, BTF_EXT_MAGIC = 0xEB9F, 0xEB9F


@dataclasses.dataclass
class _Section:
    name: str
    type: int
    flags: int
    link: int
    info: int
    align: int
    entsize: int
    data: bytearray
    name_off: int = 0


class ElfObject:
    """The sections of a little-endian ELF64 BPF relocatable object, editable and writable back."""

    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        if data[:4] != b"\x7fELF":
            raise ProgramError(f"{label} is not an ELF object (it starts with {data[:4]!r}). Fix: give the .o that "
                               f"`clang -O2 -g -target bpf -c` builds, or the C source (.c) to compile.")
        if data[4] != 2 or data[5] != 1:
            raise ProgramError(f"{label} is a 32-bit or big-endian ELF file, not a BPF object for this host. "
                               f"Fix: build it with `clang -O2 -g -target bpf -c` (not -target bpfeb).")
        (_, etype, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)
        if machine != EM_BPF:
            raise ProgramError(f"{label} is an ELF object for another machine (e_machine {machine}), not BPF. "
                               f"Fix: build it with `clang -target bpf`; a host binary or a kernel module cannot be loaded.")
        if etype != ET_REL:
            raise ProgramError(f"{label} is a linked BPF ELF file (e_type {etype}), not a relocatable object. "
                               f"Fix: give the .o that `clang -c` builds.")
        self.sections: list[_Section] = []
        for i in range(shnum):
            name, typ, flags, _, off, size, link, info, align, entsize = _SHDR.unpack_from(data, shoff + i * shentsize)
            body = bytearray(data[off:off + size]) if typ != 8 else bytearray(size)  # 8: SHT_NOBITS (.bss)
            self.sections.append(_Section("", typ, flags, link, info, align, entsize, body, name))
        self.shstrndx = shstrndx
        for s in self.sections:
            s.name = self._str(shstrndx, s.name_off)
        self.bss = {i for i, s in enumerate(self.sections) if s.type == 8}

    def _str(self, index: int, off: int) -> str:
        data = self.sections[index].data
        return bytes(data[off:data.index(0, off)]).decode()

    def index(self, name: str) -> int | None:
        return next((i for i, s in enumerate(self.sections) if s.name == name), None)

    @property
    def symtab(self) -> int:
        i = next((i for i, s in enumerate(self.sections) if s.type == SHT_SYMTAB), None)
        if i is None:
            raise ProgramError(f"{self.label} has no symbol table (stripped?). Fix: build it without `strip`; "
                               f"libbpf needs the symbols to find programs and maps.")
        return i

    def symbols(self) -> list[tuple[str, int, int, int, int, int]]:
        """(name, info, other, shndx, value, size) per symbol."""
        st = self.sections[self.symtab]
        out = []
        for off in range(0, len(st.data), _SYM.size):
            name, info, other, shndx, value, size = _SYM.unpack_from(st.data, off)
            out.append((self._str(st.link, name), info, other, shndx, value, size))
        return out

    def add_string(self, index: int, text: str) -> int:
        table = self.sections[index].data
        off = len(table)
        table += text.encode() + b"\0"
        return off

    def add_section(self, name: str, type: int, flags: int, link: int, info: int, align: int, entsize: int) -> int:
        self.sections.append(_Section(name, type, flags, link, info, align, entsize, bytearray(),
                                      self.add_string(self.shstrndx, name)))
        return len(self.sections) - 1

    def to_bytes(self) -> bytes:
        out = bytearray(64)
        offsets = []
        for i, s in enumerate(self.sections):
            if i == 0 or i in self.bss:
                offsets.append(len(out) if i else 0)
                continue
            out += b"\0" * (-len(out) % max(s.align, 1))
            offsets.append(len(out))
            out += s.data
        out += b"\0" * (-len(out) % 8)
        shoff = len(out)
        for i, s in enumerate(self.sections):
            out += _SHDR.pack(s.name_off, s.type, s.flags, 0, offsets[i], len(s.data), s.link, s.info, s.align, s.entsize)
        _EHDR.pack_into(out, 0, b"\x7fELF\x02\x01\x01" + b"\0" * 9, ET_REL, EM_BPF, 1, 0, 0, shoff, 0,
                        64, 0, 0, _SHDR.size, len(self.sections), self.shstrndx)
        return bytes(out)


def rename_extern(data: bytes, old: str, new: str, label: str) -> bytes:
    """The object with its undefined function ``old`` called ``new``: the ELF symbol and its BTF FUNC.

    Our inspector calls the filter's entry as an extern function, and libbpf's linker resolves it by its
    BTF. clang leaves a reserved name (one starting with '_', as xdp-tutorial's ``_fix_port_egress``) out
    of its debug info for an extern it calls (CGDebugInfo::EmitFuncDeclForCallSite), so the inspector
    would have no BTF for it ("failed to find BTF info for global/extern symbol"). It is compiled calling
    ``old``, a name of ours, which this renames: the object clang would have made for ``new``."""
    elf = ElfObject(data, label)
    symtab = elf.symtab
    st = elf.sections[symtab]
    hits = [n for n, (name, _, _, shndx, _, _) in enumerate(elf.symbols()) if name == old and shndx == 0]
    btf_i = elf.index(".BTF")
    funcs = _btf_funcs(elf.sections[btf_i].data, old) if btf_i is not None else []
    if len(hits) != 1 or len(funcs) != 1:
        raise ProgramError(f"bug in pktassert: {label} has {len(hits)} undefined symbols and {len(funcs)} BTF "
                           f"functions named {old}, not one each. Please report it.")
    name_off = elf.add_string(st.link, new)
    sym = list(_SYM.unpack_from(st.data, hits[0] * _SYM.size))
    _SYM.pack_into(st.data, hits[0] * _SYM.size, name_off, *sym[1:])
    assert btf_i is not None
    btf = elf.sections[btf_i].data
    struct.pack_into("<I", btf, funcs[0], _btf_add_string(btf, new, label))
    return elf.to_bytes()


def _btf_funcs(btf: bytearray, name: str) -> list[int]:
    """The offsets in ``btf`` of its FUNC types called ``name``."""
    _, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", btf)
    strings = bytes(btf[hdr_len + str_off:hdr_len + str_off + str_len])
    want = name.encode()
    found, pos, end = [], hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, _ = struct.unpack_from("<III", btf, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == 12 and strings[name_off:strings.index(b"\0", name_off)] == want:  # 12: BTF_KIND_FUNC
            found.append(pos)
        pos += 12 + _BTF_EXTRA.get(kind, (0, 0))[0] + vlen * _BTF_EXTRA.get(kind, (0, 0))[1]
    return found


# Bytes after a BTF type's 12-byte header, by kind: (fixed, per member); kinds not listed have none.
_BTF_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
              17: (4, 0), 19: (0, 12)}


def _btf_add_string(btf: bytearray, text: str, label: str) -> int:
    """Appends ``text`` to the BTF string section, which clang writes last; its offset in that section."""
    hdr_len, str_off, str_len = struct.unpack_from("<I", btf, 4)[0], *struct.unpack_from("<II", btf, 16)
    if hdr_len + str_off + str_len != len(btf):
        raise ProgramError(f"{label}: its BTF strings are not at the end of .BTF; cannot add {text!r}")
    btf += text.encode() + b"\0"
    struct.pack_into("<I", btf, 20, str_len + len(text) + 1)
    return str_len


def entry_into_text(data: bytes, func: str, label: str) -> bytes:
    """The object with function ``func`` moved from its program section into ``.text``."""
    elf = ElfObject(data, label)
    symtab = elf.symtab
    syms = elf.symbols()
    found = [(i, s) for i, s in enumerate(syms) if s[0] == func and s[1] & 0xF == STT_FUNC and s[3] < len(elf.sections)]
    if not found:
        raise ProgramError(f"{label} has no function {func}()")  # callers list the programs first
    _, (_, _, _, sec, start, size) = found[0]
    text = elf.index(".text")
    if sec == text:
        return data  # already a subprogram
    if text is None:
        text = elf.add_section(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, 0, 8, 0)
    end = start + size
    body = elf.sections[text].data
    body += b"\0" * (-len(body) % 8)
    base = len(body)
    body += elf.sections[sec].data[start:end]
    del elf.sections[sec].data[start:end]

    # Symbols: those inside the function go to .text, those after it shift down.
    st = elf.sections[symtab]
    for n, (_, info, other, shndx, value, sz) in enumerate(syms):
        if shndx != sec or info & 0xF == 3:  # 3: STT_SECTION, stays at 0
            continue
        name_off = _SYM.unpack_from(st.data, n * _SYM.size)[0]
        if start <= value < end:
            _SYM.pack_into(st.data, n * _SYM.size, name_off, info, other, text, value - start + base, sz)
        elif value >= end:
            _SYM.pack_into(st.data, n * _SYM.size, name_off, info, other, shndx, value - size, sz)

    _move_relocations(elf, sec, text, symtab, start, end, base)
    _move_btf_ext(elf, sec, text, start, end, base)
    return elf.to_bytes()


def _move_relocations(elf: ElfObject, sec: int, text: int, symtab: int, start: int, end: int, base: int) -> None:
    rel = next((i for i, s in enumerate(elf.sections) if s.type == SHT_REL and s.info == sec), None)
    if rel is None:
        return
    rel_text = next((i for i, s in enumerate(elf.sections) if s.type == SHT_REL and s.info == text), None)
    if rel_text is None:
        rel_text = elf.add_section(".rel.text", SHT_REL, 0x40, symtab, text, 8, _REL.size)  # 0x40: SHF_INFO_LINK
    keep, into_text = bytearray(), bytearray()
    src = elf.sections[rel].data
    for off in range(0, len(src), _REL.size):
        r_offset, r_info = _REL.unpack_from(src, off)
        if start <= r_offset < end:
            into_text += _REL.pack(r_offset - start + base, r_info)
        else:
            keep += _REL.pack(r_offset - (end - start) if r_offset >= end else r_offset, r_info)
    elf.sections[rel].data = keep
    elf.sections[rel_text].data += into_text


def _move_btf_ext(elf: ElfObject, sec: int, text: int, start: int, end: int, base: int) -> None:
    """BTF.ext keeps func_info, line_info and CO-RE relocations in groups by section name, each
    record starting with the instruction's byte offset in that section."""
    ext_i, btf_i = elf.index(".BTF.ext"), elf.index(".BTF")
    if ext_i is None or btf_i is None:
        return
    ext, btf = elf.sections[ext_i].data, elf.sections[btf_i].data
    magic, _, _, hdr_len = struct.unpack_from("<HBBI", ext)
    if magic != BTF_EXT_MAGIC:
        return
    sec_name, text_name = elf.sections[sec].name, ".text"
    btf_hdr = struct.unpack_from("<HBBIIIII", btf)
    str_start = btf_hdr[3] + btf_hdr[6]
    strings = bytes(btf[str_start:str_start + btf_hdr[7]])

    def name_at(off: int) -> str:
        return strings[off:strings.index(b"\0", off)].decode()

    text_off = strings.find(b"\0.text\0")
    text_off = _btf_add_string(btf, text_name, elf.label) if text_off < 0 else text_off + 1

    # where the (offset, length) pairs of func_info, line_info and (newer headers) CO-RE relocations are
    fields = [8, 16] + ([24] if hdr_len >= 32 else [])
    parts: list[bytes] = []
    for off_field in fields:
        off, length = struct.unpack_from("<II", ext, off_field)
        raw = bytes(ext[hdr_len + off:hdr_len + off + length])
        if not raw:
            parts.append(raw)
            continue
        rec_size = struct.unpack_from("<I", raw)[0]
        groups: list[tuple[int, list[bytes]]] = []
        pos = 4
        while pos < len(raw):
            name_off, n = struct.unpack_from("<II", raw, pos)
            pos += 8
            groups.append((name_off, [raw[pos + k * rec_size: pos + (k + 1) * rec_size] for k in range(n)]))
            pos += n * rec_size
        moved: list[bytes] = []
        out_groups = []
        for name_off, recs in groups:
            if name_at(name_off) == sec_name:
                kept = []
                for r in recs:
                    insn = struct.unpack_from("<I", r)[0]
                    if start <= insn < end:
                        moved.append(struct.pack("<I", insn - start + base) + r[4:])
                    else:
                        kept.append((struct.pack("<I", insn - (end - start)) if insn >= end else r[:4]) + r[4:])
                if kept:
                    out_groups.append((name_off, kept))
            else:
                out_groups.append((name_off, recs))
        if moved:
            at = next((k for k, (n, _) in enumerate(out_groups) if n == text_off or name_at(n) == text_name), None)
            if at is None:
                out_groups.append((text_off, moved))
            else:
                out_groups[at] = (out_groups[at][0], out_groups[at][1] + moved)
        blob = struct.pack("<I", rec_size) + b"".join(struct.pack("<II", n, len(r)) + b"".join(r) for n, r in out_groups)
        parts.append(blob)
    header = bytearray(ext[:hdr_len])
    at = 0
    for off_field, blob in zip(fields, parts):
        struct.pack_into("<II", header, off_field, at, len(blob))
        at += len(blob)
    elf.sections[ext_i].data = header + b"".join(parts)
