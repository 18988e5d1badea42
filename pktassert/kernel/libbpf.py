"""libbpf1 (Debian's 1.1) through ctypes: the calls pktassert makes, typed once, and its messages.

Why ctypes over the system library: Debian's python3 has no maintained libbpf binding (PyPI's
pylibbpf 0.0.7 and bpfmaps are immature), and libbpf's C API is small and stable where we use it.
Every function here is libbpf's own; nothing re-implements what it does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

c_void_p, c_char_p, c_int, c_size_t, c_uint32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32

# name: (argtypes, restype)
_SIGNATURES: dict[str, tuple[list, object]] = {
    "libbpf_set_print": ([c_void_p], c_void_p),
    "libbpf_major_version": ([], c_uint32),
    "libbpf_minor_version": ([], c_uint32),
    "bpf_object__open_file": ([c_char_p, c_void_p], c_void_p),
    "bpf_object__open_mem": ([c_void_p, c_size_t, c_void_p], c_void_p),
    "bpf_object__load": ([c_void_p], c_int),
    "bpf_object__close": ([c_void_p], None),
    "bpf_object__btf": ([c_void_p], c_void_p),
    "bpf_object__next_program": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__next_map": ([c_void_p, c_void_p], c_void_p),
    "bpf_object__find_program_by_name": ([c_void_p, c_char_p], c_void_p),
    "bpf_object__find_map_by_name": ([c_void_p, c_char_p], c_void_p),
    "bpf_program__name": ([c_void_p], c_char_p),
    "bpf_program__section_name": ([c_void_p], c_char_p),
    "bpf_program__type": ([c_void_p], c_int),
    "bpf_program__fd": ([c_void_p], c_int),
    "bpf_program__attach": ([c_void_p], c_void_p),
    "bpf_link__destroy": ([c_void_p], c_int),
    "bpf_program__set_autoload": ([c_void_p, ctypes.c_bool], c_int),
    "bpf_program__set_type": ([c_void_p, c_int], c_int),
    "bpf_program__set_expected_attach_type": ([c_void_p, c_int], c_int),
    "bpf_program__set_flags": ([c_void_p, c_uint32], c_int),
    "bpf_map__name": ([c_void_p], c_char_p),
    "bpf_map__fd": ([c_void_p], c_int),
    "bpf_map__type": ([c_void_p], c_int),
    "bpf_map__key_size": ([c_void_p], c_uint32),
    "bpf_map__value_size": ([c_void_p], c_uint32),
    "bpf_map__btf_key_type_id": ([c_void_p], c_uint32),
    "bpf_map__btf_value_type_id": ([c_void_p], c_uint32),
    "bpf_map__is_internal": ([c_void_p], ctypes.c_bool),
    "bpf_map__initial_value": ([c_void_p, ctypes.POINTER(c_size_t)], c_void_p),
    "bpf_map__set_max_entries": ([c_void_p, c_uint32], c_int),
    "bpf_map__set_pin_path": ([c_void_p, c_char_p], c_int),
    "bpf_linker__new": ([c_char_p, c_void_p], c_void_p),
    "bpf_linker__add_file": ([c_void_p, c_char_p, c_void_p], c_int),
    "bpf_linker__finalize": ([c_void_p], c_int),
    "bpf_linker__free": ([c_void_p], None),
    "btf__type_by_id": ([c_void_p, c_uint32], c_void_p),
    "btf__name_by_offset": ([c_void_p, c_uint32], c_char_p),
    "btf__find_by_name_kind": ([c_void_p, c_char_p, c_uint32], c_int),
    "btf__load_vmlinux_btf": ([], c_void_p),
    "bpf_map_lookup_elem": ([c_int, c_void_p, c_void_p], c_int),
    "bpf_map_lookup_batch": ([c_int, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p], c_int),
    "bpf_map_update_elem": ([c_int, c_void_p, c_void_p, ctypes.c_uint64], c_int),
    "bpf_map_delete_elem": ([c_int, c_void_p], c_int),
    "bpf_map_get_next_key": ([c_int, c_void_p, c_void_p], c_int),
    "bpf_map_lookup_and_delete_elem": ([c_int, c_void_p, c_void_p], c_int),
    "bpf_map_lookup_and_delete_batch": ([c_int, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p], c_int),
    "bpf_map_update_batch": ([c_int, c_void_p, c_void_p, c_void_p, c_void_p], c_int),
    "bpf_obj_get_info_by_fd": ([c_int, c_void_p, c_void_p], c_int),
    "bpf_prog_get_fd_by_id": ([c_uint32], c_int),
    # the options by address (an int, or ctypes.byref): a batch's options live in a numpy array
    "bpf_prog_test_run_opts": ([c_int, c_void_p], c_int),
    "ring_buffer__new": ([c_int, c_void_p, c_void_p, c_void_p], c_void_p),
    "ring_buffer__poll": ([c_void_p, c_int], c_int),
    "ring_buffer__consume": ([c_void_p], c_int),
    "ring_buffer__free": ([c_void_p], None),
    "perf_buffer__new": ([c_int, c_size_t, c_void_p, c_void_p, c_void_p, c_void_p], c_void_p),
    "perf_buffer__consume": ([c_void_p], c_int),
    "perf_buffer__free": ([c_void_p], None),
    "libbpf_num_possible_cpus": ([], c_int),
    "libbpf_bpf_prog_type_str": ([c_int], c_char_p),
    "libbpf_strerror": ([c_int, c_char_p, c_size_t], c_int),
}

PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RINGBUF_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
PERF_SAMPLE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_void_p, c_uint32)
PERF_LOST_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, ctypes.c_uint64)


@functools.cache
def lib() -> ctypes.CDLL:
    """Our one handle on libbpf.so.1 with the signatures above: every call pktassert makes is typed here."""
    handle = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes, fn.restype = args, res
    return handle


@functools.cache
def version() -> str:
    return f"{lib().libbpf_major_version()}.{lib().libbpf_minor_version()}"


_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]


class Said(list[str]):
    """libbpf's warnings and notes during a block; its debug lines apart, when asked for."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug: list[str] | None = [] if debug else None

    def why(self, err: int = 0) -> str:
        """What libbpf said, as one line: its warnings; else the error ``err`` and its last debug line
        (libbpf 1.1 gives some refusals of a malformed object only at debug level, or not at all)."""
        said = " ".join(s.strip() for s in self if s.strip())
        if said:
            return said
        last = f"its last words: {self.debug[-1].strip()}" if self.debug else ""
        return "; ".join(w for w in (strerror(err) if err else "", last) if w)


def strerror(err: int) -> str:
    """An errno's or libbpf's own error code's (LIBBPF_ERRNO__FORMAT...) text."""
    buf = ctypes.create_string_buffer(256)
    lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace") or f"error {err}"


_sinks: list[Said] = []


def _print(level: int, fmt: bytes, args: int) -> int:
    """libbpf's warnings and notes (the verifier's log among them) go to whoever is collecting them;
    its debug chatter nowhere, unless asked for."""
    if level > 1 and not (_sinks and _sinks[-1].debug is not None):  # LIBBPF_DEBUG
        return 0
    # The verifier's log comes whole in one message, megabytes long; its end has the reason. So the
    # message is measured first, on a copy of the va_list (x86-64's is 24 bytes; 32 covers arm64's too).
    copy = ctypes.create_string_buffer(ctypes.string_at(args, 32), 32)
    buf = ctypes.create_string_buffer(_libc.vsnprintf(None, 0, fmt, ctypes.addressof(copy)) + 1)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    if _sinks:
        sink = _sinks[-1]
        (sink if level <= 1 or sink.debug is None else sink.debug).append(buf.value.decode(errors="replace"))
    return 0


_PRINT = PRINT_FN(_print)


@contextlib.contextmanager
def messages(debug: bool = False) -> Iterator[Said]:
    """What libbpf says during the block, as lines (``debug``: its debug lines too, apart). Ours is set
    for the block only: bcc, in the same process and on the same libbpf.so, sets its own printer when it
    loads a program."""
    sink = Said(debug)
    _sinks.append(sink)
    before = lib().libbpf_set_print(ctypes.cast(_PRINT, c_void_p))
    try:
        yield sink
    finally:
        lib().libbpf_set_print(before)
        _sinks.pop()


def possible_cpus() -> int:
    return int(lib().libbpf_num_possible_cpus())


def error_of(ptr: int | None) -> int:
    """The errno a libbpf constructor failed with (it returns NULL and sets errno in 1.x)."""
    return 0 if ptr else (ctypes.get_errno() or 22)
