"""libbpf filters under test: a libbpf-style C source or the ELF object a Makefile built, loaded by
libbpf behind our inspector (pktassert/build/libbpf_build.py builds the linked object).

The program the kernel runs is our inspector calling the filter's entry as a function: the entry's
instructions are the object's, unchanged; its other programs (tail-call targets) load as they are.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from pktassert.build import diagnostics, libbpf_build, object_check, prints
from pktassert.build.source_check import RESERVED, check_cflags, check_func
from pktassert.errors import ProgramError
from pktassert.hooks.table import HOOKS, UNSPEC, typed_by_section
from pktassert.kernel import btf_types, libbpf, map_reset
from pktassert.kernel.elf_entry import REBUILD, ElfObject, malformed
from pktassert.kernel.fd_table import FdTable
from pktassert.machine import host
from pktassert.programs.bcc_program import check_hook
from pktassert.programs.loaded import Loaded
from pktassert.programs.state_map import MapValueError, to_ctype

XDP_HAS_FRAGS = 1 << 5  # BPF_F_XDP_HAS_FRAGS
DATA_SECTIONS = (".rodata", ".data", ".bss")  # and their custom sections, ".data.name" (libbpf: a map each)


def is_data_section(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in DATA_SECTIONS)


@dataclasses.dataclass(frozen=True)
class LibbpfSource:
    """A libbpf-style C source (``SEC("xdp")``, BTF maps), compiled with clang, and its entry function."""

    source: str | os.PathLike[str]
    func: str
    cflags: tuple[str, ...] = ()
    globals: tuple[tuple[str, Any], ...] = ()
    hook: str = "xdp"  # where it hooks: a key of pktassert/hooks/table.py's HOOKS
    max_entries: tuple[tuple[str, int], ...] = ()  # maps sized before load, as a loader does
    direction: str | None = None  # tc: "ingress" (the default) or "egress"
    kind = "libbpf source"

    def __post_init__(self) -> None:
        check_hook(self.hook, self.direction)
        check_func(self.func)
        object.__setattr__(self, "cflags", check_cflags(self.cflags))

    @property
    def name(self) -> str:
        return str(self.source)

    is_file = True

    def build(self) -> tuple[bytes, bool]:
        path, cached = libbpf_build.compile_source(Path(self.source), self.cflags)
        return path.read_bytes(), cached

    def cache_key(self) -> tuple:
        # The object's bytes decide what is loaded; building it is cheap when cached.
        return ("libbpf", self.build()[0], self.func, self.globals, self.hook, self.max_entries)

    def load(self) -> LibbpfLoaded:
        return LibbpfLoaded(self, self.build()[0])


@dataclasses.dataclass(frozen=True)
class ObjectFile:
    """A BPF ELF object as clang built it (``clang -O2 -g -target bpf -c``), and the program to test:
    ``func`` is its function name or its section name."""

    source: str | os.PathLike[str]
    func: str
    globals: tuple[tuple[str, Any], ...] = ()
    cflags: tuple[str, ...] = ()
    hook: str = "xdp"
    max_entries: tuple[tuple[str, int], ...] = ()  # maps sized before load, as a loader does
    direction: str | None = None  # tc: "ingress" (the default) or "egress"
    kind = "ELF object"
    is_file = True

    def __post_init__(self) -> None:
        check_hook(self.hook, self.direction)
        check_func(self.func)
        if self.cflags:
            raise ProgramError(f"cflags={self.cflags!r} for {self.source}: an object is already compiled. "
                               f"Fix: drop cflags, or give the .c source.")

    @property
    def name(self) -> str:
        return str(self.source)

    def build(self) -> tuple[bytes, bool]:
        try:
            return Path(self.source).read_bytes(), True
        except OSError as e:
            raise ProgramError(f"cannot read {self.name}: {e.strerror}. Fix: build it first (make), or give its "
                               f"path relative to the test file or the rootdir.") from None

    def cache_key(self) -> tuple:
        return ("object", self.build()[0], self.func, self.globals, self.hook, self.max_entries)

    def load(self) -> LibbpfLoaded:
        return LibbpfLoaded(self, self.build()[0])


@dataclasses.dataclass(frozen=True)
class _Prog:
    name: str
    section: str
    type: int

    @property
    def type_name(self) -> str:
        return (libbpf.lib().libbpf_bpf_prog_type_str(self.type) or b"unknown").decode()


def _handles(obj: int, next_fn: Any) -> list[int]:
    """Every program (bpf_object__next_program) or map (bpf_object__next_map) of the object."""
    out, h = list[int](), None
    while True:
        h = next_fn(obj, h)
        if not h:
            return out
        out.append(int(h))


def _programs(obj: int, label: str) -> list[_Prog]:
    lib, out = libbpf.lib(), list[_Prog]()
    for p in _handles(obj, lib.bpf_object__next_program):
        name, section = lib.bpf_program__name(p), lib.bpf_program__section_name(p)
        try:
            out.append(_Prog(name.decode(), section.decode(), lib.bpf_program__type(p)))
        except UnicodeDecodeError:
            raise malformed(label, f"its program {name!r} in section {section!r} is not named in UTF-8 text") from None
    return out


def _open(data: bytes, label: str) -> int:
    lib = libbpf.lib()
    with libbpf.messages(debug=True) as said:
        obj = lib.bpf_object__open_mem(data, len(data), None)
    if not obj:
        raise ProgramError(f"libbpf cannot open {label}: {said.why(libbpf.error_of(obj))}. {REBUILD}")
    return int(obj)


def entry_of(subject: LibbpfSource | ObjectFile, data: bytes) -> tuple[str, str, str]:
    """The entry's function name, how its argument is spelled and its section, checked against the object."""
    label = f"{subject.name} ({subject.kind})"
    elf = ElfObject(data, label)  # not an ELF, another machine, cut short, offsets out of it: said here
    if elf.index(".BTF") is None:
        raise ProgramError(f"{label} has no BTF: pktassert calls its entry as a BTF-typed function and reads its "
                           f"maps' types from BTF. Fix: build it with -g (clang -O2 -g -target bpf -c).")
    object_check.before_libbpf(elf, label)
    obj = _open(data, label)
    try:
        progs = _programs(obj, label)
        matches = [p for p in progs if subject.func in (p.name, p.section)]
        listing = ", ".join(f"{p.name}() in SEC(\"{p.section}\") [{p.type_name}]" for p in progs) or "none"
        if len(matches) != 1:
            why = "no program" if not matches else "several programs"
            raise ProgramError(f"{label} has {why} named {subject.func!r} (by function or section); its programs: "
                               f"{listing}. Fix: func= one of those function names.")
        prog = matches[0]
        hook = HOOKS[subject.hook]
        legacy = prog.type == UNSPEC and typed_by_section(prog.section) is hook  # a section libbpf 1.1 does not know
        if prog.type != hook.prog_type and not legacy:
            other = next((h for h in HOOKS.values() if h.prog_type == prog.type), None)
            fix = (f"put it at {other.name}: @pytest.mark.{other.name}(...)" if other is not None else
                   f"test a {hook.name} program here (SEC(\"{hook.sections[0]}\"))")
            kind = other.title if other is not None and other.name != "tc" else prog.type_name
            raise ProgramError(f"{label}: {prog.name}() is {_a(kind)} program (SEC(\"{prog.section}\")), not "
                               f"{_a(hook.title)} program. Fix: {fix}; its programs: {listing}.")
        ctx = btf_types.Btf(libbpf.lib().bpf_object__btf(obj), label).func_param(prog.name)
    finally:
        libbpf.lib().bpf_object__close(obj)
    if ctx is None:
        raise ProgramError(f"{label}: {prog.name}() does not take a pointer argument in its BTF. Fix: "
                           f"`int {prog.name}({HOOKS[subject.hook].ctx}ctx)`.")
    return prog.name, ctx, prog.section


class LibbpfLoaded(Loaded):
    """The linked object loaded by libbpf: the inspector's entry, the filter's maps and globals."""

    def __init__(self, subject: LibbpfSource | ObjectFile, data: bytes) -> None:
        super().__init__()
        self.subject = subject
        self.hook = HOOKS[subject.hook]
        self.label = f"{subject.name} ({subject.kind})"
        self.obj: Any = None
        # Every step before the kernel load runs in a child first (once per object per process): libbpf
        # crashes on some malformed objects, and a crash here would end the whole run.
        digest = object_check.key(data, subject.func, subject.hook, subject.globals, subject.max_entries)
        object_check.tried(self.label, digest, lambda: self._open(subject, data))
        self._open(subject, data)
        lib = libbpf.lib()
        try:
            with libbpf.messages() as said:
                rc = lib.bpf_object__load(self.obj)
            if rc != 0:
                raise ProgramError(self._load_failure(said, -rc))
            self.btf = btf_types.Btf(lib.bpf_object__btf(self.obj), self.label)
            self.fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(self.obj, self.hook.entry.encode()))
            self.record_type = self.btf.ctype(self.btf.find("pktassert_record", btf_types.STRUCT))
            self._maps = self._all_maps()
            # Fresh state is what libbpf left: recorded now, before any program ran, and put back by reset().
            self.initial = self._data_images()
            self.loader_state = self._declared_slots()
        except BaseException:
            self._close()
            raise

    def _open(self, subject: LibbpfSource | ObjectFile, data: bytes) -> None:
        """The entry found, the object linked with our inspector, opened by libbpf and prepared: all
        but the kernel load."""
        func, ctx, section = entry_of(subject, data)
        self.func = func
        # A frags-aware entry (SEC("xdp.frags")) takes frames over a page: our programs that call it must say so too.
        self.frags = section.startswith("xdp.frags")
        self.prints = prints.in_object(data, self.label)
        linked, _ = libbpf_build.link(data, self.label, func, ctx, self.hook.name, self.prints)
        # The global variables' sections of the linked object (ours merged in): libbpf makes a map of each.
        self._data_sections = [s.name for s in ElfObject(linked.read_bytes(), self.label).sections
                               if is_data_section(s.name)]
        lib = libbpf.lib()
        with libbpf.messages(debug=True) as said:
            self.obj = lib.bpf_object__open_file(str(linked).encode(), None)
        if not self.obj:
            raise ProgramError(f"libbpf cannot open the linked object of {self.label}: "
                               f"{said.why(libbpf.error_of(self.obj))}")
        try:
            self._prepare(subject)
        except BaseException:
            self._close()
            raise

    def _prepare(self, subject: LibbpfSource | ObjectFile) -> None:
        """Before load: only XDP programs load (tail-call targets; legacy "xdp_*" sections as iproute2
        took them); no map is pinned (a pin would outlive the test and be shared with the host);
        globals= written into the data sections."""
        lib, hook = libbpf.lib(), HOOKS[subject.hook]
        for p in _handles(self.obj, lib.bpf_object__next_program):
            kind = lib.bpf_program__type(p)
            if kind == UNSPEC and typed_by_section(lib.bpf_program__section_name(p).decode(errors="replace")) is hook:
                lib.bpf_program__set_type(p, hook.prog_type)
            elif kind != hook.prog_type:
                lib.bpf_program__set_autoload(p, False)
            if self.frags and lib.bpf_program__name(p).decode(errors="replace").startswith(RESERVED):  # ours
                lib.bpf_program__set_flags(p, XDP_HAS_FRAGS)
        names = []
        for handle in _handles(self.obj, lib.bpf_object__next_map):
            lib.bpf_map__set_pin_path(handle, None)
            names.append(lib.bpf_map__name(handle).decode(errors="replace"))
        for name, entries in subject.max_entries:
            m = lib.bpf_object__find_map_by_name(self.obj, name.encode()) if not name.startswith(RESERVED) else None
            if not m:
                theirs = [n for n in names if not n.startswith(RESERVED)]
                raise ProgramError(f"max_entries={{{name!r}: ...}}: {self.label} has no map {name!r}; its maps: "
                                   f"{', '.join(theirs) or 'none'}.")
            if (isinstance(entries, bool) or not isinstance(entries, int) or entries < 1
                    or lib.bpf_map__set_max_entries(m, entries)):
                raise ProgramError(f"max_entries={{{name!r}: {entries!r}}}: give a whole number of entries from 1.")
        btf = btf_types.Btf(lib.bpf_object__btf(self.obj), self.label)
        wanted = dict(subject.globals)
        placed: set[str] = set()
        for m, section in self._data_maps():
            size = ctypes.c_size_t()
            addr = lib.bpf_map__initial_value(m, ctypes.byref(size))
            for var in btf.datasec(section):
                if var.name in wanted and var.offset + var.size <= size.value:
                    value = _fit(var, wanted[var.name], self.label)
                    ctypes.memmove(addr + var.offset, ctypes.addressof(value), var.size)
                    placed.add(var.name)
        missing = set(wanted) - placed
        if missing:
            known = ", ".join(v.name for _, s in self._data_maps() for v in btf.datasec(s)
                              if not v.name.startswith(RESERVED)) or "none"
            raise ProgramError(f"globals={sorted(missing)}: {self.label} has no such global variable; its globals: "
                               f"{known}.")

    def _data_maps(self) -> list[tuple[int, str]]:
        """The map of each global variables' section, with the section's name: .rodata, .data, .bss and
        custom ones (".data.name"; libbpf finds an internal map by its section's name; an empty section
        has none)."""
        lib, out = libbpf.lib(), list[tuple[int, str]]()
        for section in self._data_sections:
            m = lib.bpf_object__find_map_by_name(self.obj, section.encode())
            if m and lib.bpf_map__is_internal(m):
                out.append((int(m), section))
        return out

    def _data_images(self) -> dict[str, bytes]:
        """What libbpf wrote into each writable data section's map at load (the object's initial values,
        globals= among them). Frozen ones (.rodata) cannot change."""
        lib, out = libbpf.lib(), dict[str, bytes]()
        for m, section in self._data_maps():
            fd = int(lib.bpf_map__fd(m))
            if map_reset.info(fd).frozen:
                continue
            key, buf = ctypes.c_uint32(0), ctypes.create_string_buffer(lib.bpf_map__value_size(m))
            if lib.bpf_map_lookup_elem(fd, ctypes.byref(key), buf) != 0:
                raise OSError(ctypes.get_errno(), f"{self.label}: cannot read the map of {section} after load")
            out[section] = buf.raw
        return out

    def _declared_slots(self) -> dict[str, dict[bytes, bytes]]:
        """What libbpf put into program arrays and maps of maps at load (declared with `.values`): by map,
        key -> the fd of this object's program or map in that slot, as the syscall takes it."""
        lib = libbpf.lib()
        owned = {"program": {map_reset.object_id(fd): fd for p in _handles(self.obj, lib.bpf_object__next_program)
                             if (fd := int(lib.bpf_program__fd(p))) >= 0},
                 "map": {map_reset.object_id(fd): fd for m in self._maps.values() if (fd := int(lib.bpf_map__fd(m))) >= 0}}
        state: dict[str, dict[bytes, bytes]] = {}
        for name, fd in self.map_fds().items():
            slots = map_reset.fd_slots(fd)
            if not slots:
                continue
            kind = map_reset.FD_SLOT_TYPES[map_reset.info(fd).type]
            ours = owned[kind]
            stray = [i for i in slots.values() if i not in ours]
            if stray:
                raise ProgramError(f"{self.label}: after load, map '{name}' holds {kind} id {stray[0]}, which is not one "
                                   f"of the object's; pktassert cannot put it back for each test.")
            state[name] = {key: ours[i].to_bytes(4, sys.byteorder) for key, i in slots.items()}
        return state

    def _load_failure(self, said: list[str], err: int) -> str:
        log = "".join(said)
        if "failed to find valid kernel BTF" in log:  # CO-RE relocations: the kernel's types, not the filter's fault
            host.check("kernel BTF")
        if "-- BEGIN PROG LOAD LOG --" not in log:  # refused before any program reached the verifier
            lines = [ln.strip() for ln in log.splitlines() if ln.strip() and "failed to load object" not in ln]
            return f"libbpf could not load {self.label}: " + "\n".join(lines[-6:] or [os.strerror(err)])
        return (f"the verifier rejected {self.func}() from {self.label}: "
                + diagnostics.libbpf_verifier_message(log, os.strerror(err)))

    def _all_maps(self) -> dict[str, int]:
        lib = libbpf.lib()
        return {lib.bpf_map__name(m).decode(errors="replace"): m for m in _handles(self.obj, lib.bpf_object__next_map)}

    def our_map_fd(self, name: str) -> int:
        return int(libbpf.lib().bpf_map__fd(self._maps[name]))

    def _user_maps(self) -> dict[str, int]:
        lib = libbpf.lib()
        return {n: m for n, m in self._maps.items() if not n.startswith(RESERVED) and not lib.bpf_map__is_internal(m)}

    def map_fds(self) -> dict[str, int]:
        return {n: int(libbpf.lib().bpf_map__fd(m)) for n, m in self._user_maps().items()}

    def state_maps(self) -> dict[str, Any]:
        return {n: self.table(n) for n in self._user_maps()}

    def table(self, name: str) -> FdTable:
        lib = libbpf.lib()
        m = self._user_maps()[name]
        key_id, value_id = lib.bpf_map__btf_key_type_id(m), lib.bpf_map__btf_value_type_id(m)
        if not key_id and not value_id:  # libbpf drops them after load for maps the kernel takes no BTF for (devmap, ...)
            key_id, value_id = self.btf.map_types(name)
        key = self.btf.ctype(key_id) if key_id else ctypes.c_uint8 * lib.bpf_map__key_size(m)
        value = self.btf.ctype(value_id) if value_id else ctypes.c_uint8 * lib.bpf_map__value_size(m)
        if lib.bpf_map__type(m) in (3, 12, 13, 14, 17, 25):  # prog array, map-in-map, devmap(hash), xskmap: u32 values
            value = ctypes.c_uint32 if not value_id else value
        return FdTable(name, lib.bpf_map__fd(m), key, value)

    def data_maps(self) -> dict[str, tuple[int, list[btf_types.Var]]]:
        """Each data section's map fd and its variables."""
        lib = libbpf.lib()
        return {s: (int(lib.bpf_map__fd(m)), self.btf.datasec(s)) for m, s in self._data_maps()}

    def reset(self) -> None:
        super().reset()
        # Global variables are state too: .data, .bss and custom .data.* back to what libbpf wrote at load
        # (.rodata is frozen).
        zero = bytes(4)
        for section, (fd, _) in self.data_maps().items():
            if section in self.initial:
                map_reset.fill(fd, {zero: self.initial[section]})

    def program_fd(self, func: str) -> int:
        lib = libbpf.lib()
        if func == self.func:
            raise ProgramError(f"{func}() is the program under test: it runs inside pktassert's inspector and has no "
                               f"program of its own to put in a program array. Fix: test the program that tail-calls it.")
        p = lib.bpf_object__find_program_by_name(self.obj, func.encode()) if not func.startswith(RESERVED) else None
        if not p or lib.bpf_program__fd(p) < 0:
            names = [x.name for x in _programs(self.obj, self.label)
                     if x.type == self.hook.prog_type and not x.name.startswith(RESERVED)]
            raise ProgramError(f"{self.label} has no {self.hook.name} program {func}() for a program array; its programs: "
                               f"{', '.join(names) or 'none'}.")
        return int(lib.bpf_program__fd(p))

    def bare_fd(self) -> int:
        lib = libbpf.lib()
        return int(lib.bpf_program__fd(lib.bpf_object__find_program_by_name(self.obj, b"pktassert_bare")))

    def _close(self) -> None:
        if self.obj:
            libbpf.lib().bpf_object__close(self.obj)
            self.obj = None


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" or word[:1] in "FHLMNRSX" else "a ") + word  # "an XDP program"


def _fit(var: btf_types.Var, value: Any, label: str) -> Any:
    try:
        return to_ctype(var.ctype, value, f"globals[{var.name!r}] of {label}")
    except MapValueError as e:
        raise ProgramError(str(e)) from None
