"""The oracle's other side (tests/test_oracle.py), unit tier: a BPF program loaded and run ALONE, with nothing
of pktassert's between it and the kernel, to say what the kernel does with each frame.

- ``load_object``: a BPF ELF object opened and loaded by libbpf itself (ctypes, our own typed handle),
  as a loader would: programs of the hook's type only, no map pinned, ``.rodata``/``.data`` globals
  written before load, maps sized before load. ``load_bcc``: a bcc source compiled alone by bcc.
- ``run_unit``: BPF_PROG_TEST_RUN, one frame at a time (repeat=1): (return value, frame out).

The same programs attached alone on a link of their own: tests/oracle_live.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

XDP, SCHED_CLS = 6, 3                          # BPF_PROG_TYPE_*
PROG_TYPES = {"xdp": XDP, "tc": SCHED_CLS}
SECTIONS = {"xdp": ("xdp",), "tc": ("tc", "classifier")}
BTF_KIND_VAR, BTF_KIND_DATASEC = 14, 15
DATA_SECTIONS = (".rodata", ".data", ".bss")


class OracleError(Exception):
    """The oracle itself could not say what the kernel did (never a verdict)."""


# --- libbpf, through ctypes --------------------------------------------------------------------------------

c_void_p, c_char_p, c_int, c_uint32, c_size_t = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
_SIGNATURES = {
    "libbpf_set_print": ([c_void_p], c_void_p),
    "bpf_object__open_mem": ([c_void_p, c_size_t, c_void_p], c_void_p),
    "bpf_object__load": ([c_void_p], c_int),
    "bpf_object__close": ([c_void_p], None),
    "bpf_object__btf": ([c_void_p], c_void_p),
    "bpf_object__next_program": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__next_map": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__find_map_by_name": ([c_void_p, c_char_p], c_void_p),
    "bpf_program__name": ([c_void_p], c_char_p),
    "bpf_program__section_name": ([c_void_p], c_char_p),
    "bpf_program__type": ([c_void_p], c_int),
    "bpf_program__set_type": ([c_void_p, c_int], c_int),
    "bpf_program__set_autoload": ([c_void_p, ctypes.c_bool], c_int),
    "bpf_program__fd": ([c_void_p], c_int),
    "bpf_map__name": ([c_void_p], c_char_p),
    "bpf_map__fd": ([c_void_p], c_int),
    "bpf_map__is_internal": ([c_void_p], ctypes.c_bool),
    "bpf_map__initial_value": ([c_void_p, ctypes.POINTER(c_size_t)], c_void_p),
    "bpf_map__set_max_entries": ([c_void_p, c_uint32], c_int),
    "bpf_map__set_pin_path": ([c_void_p, c_char_p], c_int),
    "btf__type_by_id": ([c_void_p, c_uint32], c_void_p),
    "btf__name_by_offset": ([c_void_p, c_uint32], c_char_p),
    "btf__find_by_name_kind": ([c_void_p, c_char_p, c_uint32], c_int),
    "bpf_map_update_elem": ([c_int, c_void_p, c_void_p, ctypes.c_uint64], c_int),
}
_QUIET = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)(lambda level, fmt, args: 0)


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


class _TestRunOpts(ctypes.Structure):   # libbpf's struct bpf_test_run_opts
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
                ("data_size_in", c_uint32), ("data_size_out", c_uint32),
                ("ctx_in", c_void_p), ("ctx_out", c_void_p), ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32),
                ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32),
                ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32)]


@functools.cache
def _test_run_fn():
    fn = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)["bpf_prog_test_run_opts"]
    fn.argtypes, fn.restype = [c_int, ctypes.POINTER(_TestRunOpts)], c_int
    return fn


@contextlib.contextmanager
def _quiet_libbpf() -> Iterator[None]:
    before = _lib().libbpf_set_print(ctypes.cast(_QUIET, c_void_p))
    try:
        yield
    finally:
        _lib().libbpf_set_print(before)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class _VarSecinfo(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


def _datasec_vars(btf: int, section: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of the variables in a DATASEC of the object's BTF."""
    lib = _lib()
    tid = lib.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
    if tid <= 0:
        return {}
    t = _BtfType.from_address(lib.btf__type_by_id(btf, tid))
    vlen = t.info & 0xFFFF
    base = lib.btf__type_by_id(btf, tid) + ctypes.sizeof(_BtfType)
    out = {}
    for i in range(vlen):
        info = _VarSecinfo.from_address(base + i * ctypes.sizeof(_VarSecinfo))
        var = _BtfType.from_address(lib.btf__type_by_id(btf, info.type))
        out[lib.btf__name_by_offset(btf, var.name_off).decode()] = (info.offset, info.size)
    return out


# --- programs loaded alone -----------------------------------------------------------------------------------

class Alone:
    """A program loaded alone: its fd, its hook, its maps by name."""

    hook: str
    fd: int

    def map_fd(self, name: str) -> int:
        raise NotImplementedError

    def update(self, name: str, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        if _lib().bpf_map_update_elem(self.map_fd(name), k, v, 0) != 0:
            err = ctypes.get_errno()
            raise OracleError(f"writing {name}[{key.hex()}] = {value.hex()} alone: {os.strerror(err)}")

    def close(self) -> None:
        raise NotImplementedError


class LibbpfAlone(Alone):
    def __init__(self, data: bytes, func: str, hook: str, globals_: Mapping[str, int | bytes] = (),
                 max_entries: Mapping[str, int] = ()) -> None:
        lib, self.hook = _lib(), hook
        self._data = ctypes.create_string_buffer(data, len(data))   # libbpf keeps pointers into it until load
        with _quiet_libbpf():
            self.obj = lib.bpf_object__open_mem(self._data, len(data), None)
        if not self.obj:
            raise OracleError(f"libbpf cannot open the object alone: {os.strerror(ctypes.get_errno())}")
        try:
            self._prepare(func, dict(globals_), dict(max_entries))
            with _quiet_libbpf():
                rc = lib.bpf_object__load(self.obj)
            if rc:
                raise OracleError(f"libbpf cannot load the object alone: {os.strerror(-rc)}")
        except BaseException:
            lib.bpf_object__close(self.obj)
            raise
        self.fd = lib.bpf_program__fd(self._entry)

    def _prepare(self, func: str, globals_: dict[str, int | bytes], sizes: dict[str, int]) -> None:
        lib, p, self._entry = _lib(), None, None
        while p := lib.bpf_object__next_program(self.obj, p):
            kind, section = lib.bpf_program__type(p), lib.bpf_program__section_name(p).decode()
            if kind == 0 and section.startswith(SECTIONS[self.hook]):   # a legacy section name ("xdp_foo")
                lib.bpf_program__set_type(p, PROG_TYPES[self.hook])
            elif kind != PROG_TYPES[self.hook]:
                lib.bpf_program__set_autoload(p, False)   # e.g. a kprobe beside the tc programs
            if func in (lib.bpf_program__name(p).decode(), section):
                self._entry = p
        if self._entry is None:
            raise OracleError(f"no program {func!r} in the object")
        m = None
        while m := lib.bpf_object__next_map(self.obj, m):
            lib.bpf_map__set_pin_path(m, None)   # LIBBPF_PIN_BY_NAME would pin in the host's bpffs
        for name, n in sizes.items():
            m = lib.bpf_object__find_map_by_name(self.obj, name.encode())
            if not m or lib.bpf_map__set_max_entries(m, n):
                raise OracleError(f"cannot size map {name!r} alone")
        btf = lib.bpf_object__btf(self.obj)
        placed = set()
        m = None
        while m := lib.bpf_object__next_map(self.obj, m):
            name = lib.bpf_map__name(m).decode()
            section = next((s for s in DATA_SECTIONS if name.endswith(s)), None)
            if not lib.bpf_map__is_internal(m) or section is None:
                continue
            size = c_size_t()
            addr = lib.bpf_map__initial_value(m, ctypes.byref(size))
            for var, (offset, width) in _datasec_vars(btf, section).items():
                if var in globals_:
                    value = globals_[var]
                    raw = value if isinstance(value, bytes) else int(value).to_bytes(width, "little", signed=value < 0)
                    if len(raw) != width or offset + width > size.value:
                        raise OracleError(f"global {var!r}: {len(raw)} bytes for a {width}-byte variable")
                    ctypes.memmove(addr + offset, raw, width)
                    placed.add(var)
        if set(globals_) - placed:
            raise OracleError(f"no globals {sorted(set(globals_) - placed)} in the object")

    def map_fd(self, name: str) -> int:
        m = _lib().bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise OracleError(f"no map {name!r} in the object")
        return _lib().bpf_map__fd(m)

    def close(self) -> None:
        if self.obj:
            _lib().bpf_object__close(self.obj)
            self.obj = None


# What a bcc source may use without including it: what pktassert's composition of a bcc filter includes
# before it (pktassert/programs/bcc_program.py), which is part of what "a bcc source" means there.
BCC_PRELUDE = ("#include <uapi/linux/bpf.h>\n#include <linux/if_ether.h>\n#include <linux/in.h>\n"
               "#include <linux/ip.h>\n#include <linux/ipv6.h>\n#include <linux/pkt_cls.h>\n")


class BccAlone(Alone):
    def __init__(self, source: Path, func: str, hook: str) -> None:
        from bcc import BPF

        self.hook = hook
        self.bpf = BPF(text=(BCC_PRELUDE + f'#line 1 "{source}"\n' + source.read_text()).encode())
        self.fd = self.bpf.load_func(func.encode(), BPF.XDP if hook == "xdp" else BPF.SCHED_CLS).fd

    def map_fd(self, name: str) -> int:
        return int(self.bpf[name.encode()].map_fd)

    def reset(self) -> None:
        """Every map of the source emptied (hash maps) or zeroed (arrays): fresh state without compiling
        it again, which takes bcc a second or more."""
        from bcc import libbcc

        lib = libbcc.lib
        lib.bpf_num_tables.argtypes, lib.bpf_num_tables.restype = [c_void_p], c_size_t
        lib.bpf_table_name.argtypes, lib.bpf_table_name.restype = [c_void_p, c_size_t], c_char_p
        for i in range(lib.bpf_num_tables(self.bpf.module)):
            self.bpf[lib.bpf_table_name(self.bpf.module, i)].clear()

    def close(self) -> None:
        self.bpf.cleanup()


def load_object(path: Path, func: str, hook: str, globals_: Mapping[str, int | bytes] = (),
                max_entries: Mapping[str, int] = ()) -> LibbpfAlone:
    return LibbpfAlone(Path(path).read_bytes(), func, hook, globals_, max_entries)


def load_bcc(source: Path, func: str, hook: str) -> BccAlone:
    return BccAlone(Path(source), func, hook)


# --- BPF_PROG_TEST_RUN, alone ---------------------------------------------------------------------------------

def skb_context(mark: int = 0, ingress_ifindex: int = 0) -> bytes:
    """The start of a struct __sk_buff for a tc test run: mark at 8, ingress_ifindex at 36 (uapi/linux/bpf.h,
    a stable ABI); the kernel takes a context shorter than the struct and zero-fills the rest."""
    ctx = bytearray(40)
    struct.pack_into("<I", ctx, 8, mark)
    struct.pack_into("<I", ctx, 36, ingress_ifindex)
    return bytes(ctx)


def run_unit(alone: Alone, frames: Sequence[bytes], ctx: bytes | None = None) -> list[tuple[int, bytes]]:
    """Each frame through the program by BPF_PROG_TEST_RUN: (its return value, signed; the frame it left)."""
    out = ctypes.create_string_buffer(1 << 17)
    ctx_buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    results = []
    for frame in frames:
        buf = ctypes.create_string_buffer(frame, len(frame))
        opts.data_in, opts.data_size_in = ctypes.addressof(buf), len(frame)
        opts.data_out, opts.data_size_out = ctypes.addressof(out), len(out)
        opts.ctx_in, opts.ctx_size_in = (ctypes.addressof(ctx_buf), len(ctx)) if ctx_buf is not None else (None, 0)
        opts.repeat, opts.retval = 1, 0
        if _test_run_fn()(alone.fd, ctypes.byref(opts)) != 0:
            err = ctypes.get_errno()
            raise OracleError(f"BPF_PROG_TEST_RUN alone refused a {len(frame)}-byte frame: {os.strerror(err)} "
                              f"({frame[:64].hex()})")
        results.append((ctypes.c_int32(opts.retval).value, out.raw[:opts.data_size_out]))
    return results
