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

Objects come from users, so every offset, size and count is checked against the bytes that hold it
before it is used: a malformed object is a ProgramError that says what is wrong and where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct

from pktassert.errors import ProgramError

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHT_REL = 0, 1, 2, 3, 8, 9
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
KNOWN_FLAGS = 0xFFF00FF7  # ELF's section flags, and those reserved to systems and processors
STT_FUNC = 2
EM_BPF = 247
ET_REL = 1
BTF_MAGIC, BTF_EXT_MAGIC = 0xEB9F, 0xEB9F
MAX_ALIGN = 1 << 16  # clang aligns BPF sections to 8 (a global may ask for more); padding is written out
REBUILD = "Fix: rebuild it with `clang -O2 -g -target bpf -c` (and check that nothing rewrites it after)."


def malformed(label: str, what: str) -> ProgramError:
    return ProgramError(f"{label} is malformed: {what}. {REBUILD}")


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
    nobits: int = 0  # the size of a SHT_NOBITS section (.bss), which has no bytes in the file


class ElfObject:
    """The sections of a little-endian ELF64 BPF relocatable object, editable and writable back."""

    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        if data[:4] != b"\x7fELF":
            raise ProgramError(f"{label} is not an ELF object (it starts with {data[:4]!r}). Fix: give the .o that "
                               f"`clang -O2 -g -target bpf -c` builds, or the C source (.c) to compile.")
        if len(data) < _EHDR.size:
            raise malformed(label, f"it is {len(data)} bytes long, shorter than an ELF header ({_EHDR.size} bytes): "
                                   f"cut short")
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
        if shentsize != _SHDR.size or not shstrndx < shnum:
            raise malformed(label, f"its ELF header gives {shnum} section headers of {shentsize} bytes (not "
                                   f"{_SHDR.size}), their names in section #{shstrndx}")
        if shoff + shnum * _SHDR.size > len(data):
            raise malformed(label, f"its section header table (bytes {shoff}..{shoff + shnum * _SHDR.size}) runs past "
                                   f"the end of the file ({len(data)} bytes): cut short")
        heads = [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum)]
        self.sections: list[_Section] = []
        for i, (name, typ, flags, _, off, size, link, info, align, entsize) in enumerate(heads):
            inside = i == 0 or typ in (SHT_NULL, SHT_NOBITS) or off + size <= len(data)
            if not inside or align > MAX_ALIGN or align & (align - 1):
                what = f"bytes {off}..{off + size}, past the end of the file ({len(data)} bytes)" if not inside else \
                    f"an alignment of {align}, not a power of two up to {MAX_ALIGN}"
                raise malformed(label, f"its section #{i} has {what}")
            body = bytearray() if i == 0 or typ in (SHT_NULL, SHT_NOBITS) else bytearray(data[off:off + size])
            self.sections.append(_Section("", typ, flags, link, info, align, entsize, body, name,
                                          size if typ == SHT_NOBITS else 0))
        self.shstrndx = shstrndx
        for i, s in enumerate(self.sections):
            s.name = self._str(shstrndx, s.name_off, f"the name of section #{i}")
            if s.flags & ~KNOWN_FLAGS:  # libbpf's linker refuses them, saying nothing
                raise malformed(label, f"its section #{i} ({s.name}) has flags {s.flags:#x}, not ELF's")
            rel, code = s.type == SHT_REL, s.type == SHT_PROGBITS and s.flags & SHF_EXECINSTR
            if rel and (s.entsize != _REL.size or len(s.data) % _REL.size) or code and len(s.data) % 8:
                raise malformed(label, f"its section #{i} ({s.name}) is {len(s.data)} bytes, not whole "
                                       f"{'relocations of 16 bytes' if rel else 'instructions of 8 bytes'}")
        self.bss = {i for i, s in enumerate(self.sections) if s.type == SHT_NOBITS}

    def _str(self, index: int, off: int, what: str) -> str:
        """The string at ``off`` of string table ``index``; ``what``: what it is, for the error."""
        table = self.sections[index].data if index < len(self.sections) else bytearray()
        end = table.find(0, off) if off < len(table) else -1
        with contextlib.suppress(UnicodeDecodeError):
            if end >= 0:
                return bytes(table[off:end]).decode()
        raise malformed(self.label, f"{what} (at byte {off} of section #{index}, {len(table)} bytes) is no UTF-8 "
                                    f"string: {bytes(table[off:end if end >= 0 else off + 40])[:40]!r}")

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
        if len(st.data) % _SYM.size or st.entsize != _SYM.size:
            raise malformed(self.label, f"its symbol table ({st.name}) is {len(st.data)} bytes of {st.entsize}-byte "
                                        f"symbols, not whole symbols of {_SYM.size}")
        out = []
        for off in range(0, len(st.data), _SYM.size):
            name, info, other, shndx, value, size = _SYM.unpack_from(st.data, off)
            if info & 0xF == 3 and (value or not 0 < shndx < len(self.sections)):  # STT_SECTION: libbpf's linker
                # refuses a value, saying nothing, and crashes on a section it does not have (SHN_XINDEX...)
                raise malformed(self.label, f"its section symbol #{off // _SYM.size} is at {value} in section #{shndx}, "
                                            f"of {len(self.sections)}")
            out.append((self._str(st.link, name, f"the name of symbol #{off // _SYM.size}"), info, other, shndx,
                        value, size))
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
            size = s.nobits if i in self.bss else len(s.data)
            align = max(s.align, 1) if i else 0  # 0 says 1 in ELF; libbpf's linker refuses it, saying nothing
            out += _SHDR.pack(s.name_off, s.type, s.flags, 0, offsets[i], size, s.link, s.info, align, s.entsize)
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
    """The offsets in ``btf`` (our inspector's) of its FUNC types called ``name``."""
    _, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", btf)
    strings = bytes(btf[hdr_len + str_off:hdr_len + str_off + str_len])
    want = name.encode() + b"\0"
    found, pos, end = [], hdr_len + type_off, hdr_len + type_off + type_len
    while pos + 12 <= min(end, len(btf)):
        name_off, info, _ = struct.unpack_from("<III", btf, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == 12 and strings.startswith(want, name_off):  # 12: BTF_KIND_FUNC
            found.append(pos)
        pos += 12 + _BTF_EXTRA.get(kind, (0, 0))[0] + vlen * _BTF_EXTRA.get(kind, (0, 0))[1]
    return found


# Bytes after a BTF type's 12-byte header, by kind: (fixed, per member); kinds not listed have none.
_BTF_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
              17: (4, 0), 19: (0, 12)}


def _btf_strings(btf: bytearray, label: str) -> tuple[int, int]:
    """Where BTF's strings are in ``btf``: (start, length), checked."""
    if len(btf) < 24 or struct.unpack_from("<H", btf)[0] != BTF_MAGIC:
        raise malformed(label, "its .BTF section has no BTF header")
    hdr_len, str_off, str_len = struct.unpack_from("<I", btf, 4)[0], *struct.unpack_from("<II", btf, 16)
    if hdr_len + str_off + str_len > len(btf):
        raise malformed(label, f"its .BTF strings (bytes {hdr_len + str_off}..{hdr_len + str_off + str_len}) run past "
                               f"the end of the section ({len(btf)} bytes)")
    return hdr_len + str_off, str_len


def _btf_add_string(btf: bytearray, text: str, label: str) -> int:
    """Appends ``text`` to the BTF string section, which clang writes last; its offset in that section."""
    at, str_len = _btf_strings(btf, label)
    if at + str_len != len(btf):
        raise malformed(label, f"its BTF strings are not at the end of .BTF, where clang writes them; cannot add {text!r}")
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
    code = elf.sections[sec]
    if code.type != SHT_PROGBITS or start % 8 or size % 8 or not size or start + size > len(code.data):
        raise malformed(label, f"its symbol {func}() gives bytes {start}..{start + size} of section #{sec} "
                               f"({code.name}, {len(code.data)} bytes), not whole instructions of its code")
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
    src = elf.sections[rel].data
    rel_text = next((i for i, s in enumerate(elf.sections) if s.type == SHT_REL and s.info == text), None)
    if rel_text is None:
        rel_text = elf.add_section(".rel.text", SHT_REL, 0x40, symtab, text, 8, _REL.size)  # 0x40: SHF_INFO_LINK
    keep, into_text = bytearray(), bytearray()
    for off in range(0, len(src), _REL.size):
        r_offset, r_info = _REL.unpack_from(src, off)
        if start <= r_offset < end:
            into_text += _REL.pack(r_offset - start + base, r_info)
        else:
            keep += _REL.pack(r_offset - (end - start) if r_offset >= end else r_offset, r_info)
    elf.sections[rel].data = keep
    elf.sections[rel_text].data += into_text


# BTF.ext's parts: where each one's (offset, length) pair is in its header, its name, libbpf's smallest
# record for it (bpf_func_info, bpf_line_info, bpf_core_relo), and which words of a record are type ids
# and which are offsets into BTF's strings.
_EXT_PARTS = {8: ("func_info", 8, (1,), ()), 16: ("line_info", 16, (), (1, 2)),
              24: ("CO-RE relocations", 16, (1,), (2,))}
ExtGroups = list[tuple[int, list[bytes]]]  # (section name's offset in BTF strings, its records)


def btf_ext_parts(ext: bytes | bytearray, label: str, types: int = 0,
                  strings: int = 0) -> tuple[int, list[tuple[int, int, ExtGroups]]]:
    """BTF.ext's header length and, for each part, where its pair is, its record size and its groups; every
    count and size checked as libbpf checks them (it drops a bad .BTF.ext with a warning, or its linker
    fails saying nothing), and, given the BTF's numbers of ``types`` and bytes of ``strings``, every type
    id and string offset in it."""
    def bad(what: str) -> ProgramError:
        return malformed(label, f"its .BTF.ext section {what}")

    if len(ext) < 24 or struct.unpack_from("<HBB", ext) != (BTF_EXT_MAGIC, 1, 0):
        raise bad(f"({len(ext)} bytes) does not start with a BTF.ext header (version 1, little-endian)")
    hdr_len = struct.unpack_from("<I", ext, 4)[0]
    if not 24 <= hdr_len < len(ext):
        raise bad(f"has a header of {hdr_len} bytes, in {len(ext)} bytes")
    parts = []
    for field in (8, 16, 24) if hdr_len >= 32 else (8, 16):
        what, smallest, ids, strs = _EXT_PARTS[field]
        off, length = struct.unpack_from("<II", ext, field)
        if hdr_len + off + length > len(ext) or off % 4:
            raise bad(f"has its {what} at bytes {hdr_len + off}..{hdr_len + off + length}, past its end "
                      f"({len(ext)} bytes) or not in whole words")
        raw = bytes(ext[hdr_len + off:hdr_len + off + length])
        rec_size = struct.unpack_from("<I", raw)[0] if len(raw) >= 4 else 0
        if raw and (rec_size < smallest or rec_size % 4):
            raise bad(f"has {what} records of {rec_size} bytes (at least {smallest}, in whole words)")
        groups: ExtGroups = []
        pos = 4
        while pos < len(raw):
            name_off, n = struct.unpack_from("<II", raw, pos) if pos + 8 <= len(raw) else (0, 0)
            if not n or 8 + n * rec_size > len(raw) - pos:
                raise bad(f"has a group of {n} {what} records of {rec_size} bytes where {len(raw) - pos - 8} bytes "
                          f"are left")
            pos += 8
            recs = [raw[pos + k * rec_size: pos + (k + 1) * rec_size] for k in range(n)]
            pos += n * rec_size
            words = [(w, v) for r in recs for w, v in enumerate(struct.unpack_from("<4I", r + bytes(8)))]
            if types and (any(v >= types for w, v in words if w in ids) or name_off >= strings
                          or any(v >= strings for w, v in words if w in strs)):
                raise bad(f"has {what} naming a BTF type or string it does not have (of {types} types and "
                          f"{strings} bytes of strings)")
            groups.append((name_off, recs))
        parts.append((field, rec_size, groups))
    return hdr_len, parts


def _move_btf_ext(elf: ElfObject, sec: int, text: int, start: int, end: int, base: int) -> None:
    """BTF.ext keeps func_info, line_info and CO-RE relocations in groups by section name, each
    record starting with the instruction's byte offset in that section."""
    ext_i, btf_i = elf.index(".BTF.ext"), elf.index(".BTF")
    if ext_i is None or btf_i is None:
        return
    ext, btf = elf.sections[ext_i].data, elf.sections[btf_i].data
    hdr_len, ext_parts = btf_ext_parts(ext, elf.label)
    sec_name, text_name = elf.sections[sec].name, ".text"
    str_start, str_len = _btf_strings(btf, elf.label)
    strings = bytes(btf[str_start:str_start + str_len])

    def name_at(off: int) -> str:
        stop = strings.find(b"\0", off)
        try:
            if 0 <= off < len(strings) and stop >= 0:
                return strings[off:stop].decode()
        except UnicodeDecodeError:
            pass
        raise malformed(elf.label, f"its .BTF.ext names a section by BTF string {off}, which is not one "
                                   f"(its strings are {len(strings)} bytes)")

    text_off = strings.find(b"\0.text\0")
    text_off = _btf_add_string(btf, text_name, elf.label) if text_off < 0 else text_off + 1

    parts: list[bytes] = []
    for _, rec_size, groups in ext_parts:
        if not rec_size:  # an empty part
            parts.append(b"")
            continue
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
    for (off_field, _, _), blob in zip(ext_parts, parts):
        struct.pack_into("<II", header, off_field, at, len(blob))
        at += len(blob)
    elf.sections[ext_i].data = header + b"".join(parts)
