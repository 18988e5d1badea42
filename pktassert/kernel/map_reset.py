"""Empty a BPF map by its fd, whoever loaded it: fresh per-test state for each map type a filter may have.

``reset(fd)`` empties it (deletes keys or indexes, zeroes values, pops, drains) or raises NotResettable;
``resettable(fd)`` asks in advance; ``info(fd)`` is what BPF_OBJ_GET_INFO_BY_FD says about it.
``fd_slots(fd)`` reads what a program array or map of maps holds (ids), ``fill(fd, entries)`` writes
entries back: what a loader put into a map at load time is fresh state too, and is put back after ``reset``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import errno
import functools
import itertools
import mmap
import os
from collections.abc import Callable, Iterable

import numpy as np

from pktassert.errors import PktassertError
from pktassert.kernel import libbpf

_ENOTSUPP = 524        # the kernel-internal "not supported" that some map ops let out through bpf(2)
_F_MMAPABLE = 1 << 10  # BPF_F_MMAPABLE: an array whose values user space may mmap
_CHUNK = 1 << 14       # entries per batch call: bounds the buffers; a few calls cost nothing
_PASSES = 3            # a program still writing could refill a map behind us; we retry, then say so


# enum bpf_map_type (include/uapi/linux/bpf.h) numbers its members by position: this list keeps that order.
# Names as libbpf_bpf_map_type_str() gives them, upper-cased (the tests compare the two).
MapType = enum.IntEnum("MapType", """UNSPEC HASH ARRAY PROG_ARRAY PERF_EVENT_ARRAY PERCPU_HASH PERCPU_ARRAY
    STACK_TRACE CGROUP_ARRAY LRU_HASH LRU_PERCPU_HASH LPM_TRIE ARRAY_OF_MAPS HASH_OF_MAPS DEVMAP SOCKMAP CPUMAP
    XSKMAP SOCKHASH CGROUP_STORAGE REUSEPORT_SOCKARRAY PERCPU_CGROUP_STORAGE QUEUE STACK SK_STORAGE DEVMAP_HASH
    STRUCT_OPS RINGBUF INODE_STORAGE TASK_STORAGE BLOOM_FILTER USER_RINGBUF CGRP_STORAGE ARENA""", start=0)
_PERCPU = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}


class NotResettable(PktassertError):
    """The map's type cannot be emptied from user space (or is unknown here)."""


class _Info(ctypes.Structure):  # the head of struct bpf_map_info; the kernel takes a shorter struct
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


@dataclasses.dataclass(frozen=True)
class MapInfo:
    fd: int
    id: int
    type: int
    type_name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str
    frozen: bool      # bpf_map_freeze()d (loaders do it to .rodata): no writes from user space
    read_write: bool  # this fd may read and write (BPF_F_RDONLY/WRONLY fds can't; the map's flags don't say)

    def __str__(self) -> str:
        return f"map '{self.name}' (id {self.id}, {self.type_name})"

    @property
    def why_not(self) -> str | None:
        """Why reset() would refuse this map, or None."""
        how = _TYPES.get(self.type, "pktassert has no way to empty this map type")
        if isinstance(how, str):
            return how
        if self.frozen:
            return "it is frozen (bpf_map_freeze): user space may not write it"
        return None if self.read_write else "this fd is not open read-write (BPF_F_RDONLY or BPF_F_WRONLY)"

    @property
    def resettable(self) -> bool:
        return self.why_not is None

    @property
    def value_len(self) -> int:
        """Bytes of one value as the syscalls copy it: per-CPU maps hand over one 8-aligned slot per CPU."""
        if self.type in _PERCPU:
            return (self.value_size + 7) // 8 * 8 * _possible_cpus()
        return self.value_size


def _fn(name: str) -> Callable[..., int]:
    # libbpf >= 1.0 returns -errno from these, so no get_errno() is needed.
    return getattr(libbpf.lib(), name)  # type: ignore[no-any-return]


@functools.cache
def _possible_cpus() -> int:
    """CPUs in /sys/devices/system/cpu/possible ("0-3" or "0,2-5"): per-CPU values have one slot each."""
    with open("/sys/devices/system/cpu/possible") as f:
        spans = [s.split("-") for s in f.read().strip().split(",")]
    return sum(int(s[-1]) - int(s[0]) + 1 for s in spans)


def _error(m: MapInfo, what: str, err: int) -> OSError:
    return OSError(err, f"resetting {m}: {what}: {os.strerror(err)}")


def _check(m: MapInfo, what: str, rc: int, ok: Iterable[int] = ()) -> None:
    if rc < 0 and -rc not in ok:
        raise _error(m, what, -rc)


def _each(m: MapInfo, name: str, addresses: range, ok: tuple[int, ...]) -> None:
    """Call ``name(fd, key)`` for every key address, with the loop in C (map(), no Python frame per key)."""
    rc = np.fromiter(map(_fn(name), itertools.repeat(m.fd), addresses), np.int64, len(addresses))
    bad = rc[(rc < 0) & ~np.isin(-rc, ok)]
    if bad.size:
        raise _error(m, name, int(-bad[0]))


def _keys(m: MapInfo) -> list[bytes]:
    """Every key, walked with get_next_key; bounded, since a key deleted under us restarts the walk."""
    nxt, buf = _fn("bpf_map_get_next_key"), ctypes.create_string_buffer(m.key_size)
    keys: list[bytes] = []
    while len(keys) <= m.max_entries:
        rc = nxt(m.fd, keys[-1] if keys else None, buf)
        if rc == -errno.ENOENT:
            break
        _check(m, "bpf_map_get_next_key", rc)
        keys.append(buf.raw)
    return keys


def _delete_keys(m: MapInfo) -> None:
    # Collect first, then delete: a hash's get_next_key from a deleted key starts over at the first.
    for _ in range(_PASSES):
        keys = _keys(m)
        if not keys:
            return
        buf = ctypes.create_string_buffer(b"".join(keys))
        base = ctypes.addressof(buf)
        _each(m, "bpf_map_delete_elem", range(base, base + len(keys) * m.key_size, m.key_size), (errno.ENOENT,))
    raise _error(m, f"still has entries after {_PASSES} passes (a program adding them?)", errno.EBUSY)


def _delete_batch(m: MapInfo) -> None:
    """Hash maps: lookup_and_delete_batch empties ~16k entries per call; the walk after it checks."""
    n = max(1, min(m.max_entries, _CHUNK, (4 << 20) // max(1, m.value_len)))
    keys, values = ctypes.create_string_buffer(n * m.key_size), ctypes.create_string_buffer(n * m.value_len)
    tokens = [ctypes.create_string_buffer(max(8, m.key_size)) for _ in range(2)]  # in/out batch position
    count, fn, first = ctypes.c_uint32(), _fn("bpf_map_lookup_and_delete_batch"), True
    while True:
        count.value = n
        rc = fn(m.fd, None if first else tokens[0], tokens[1], keys, values, ctypes.byref(count), None)
        if rc < 0:
            # ENOENT: past the last bucket. ENOSPC (a bucket larger than n) or no batch op on this
            # kernel: the key walk below does the rest.
            _check(m, "bpf_map_lookup_and_delete_batch", rc,
                   (errno.ENOENT, errno.ENOSPC, errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP))
            break
        tokens.reverse()
        first = False
    _delete_keys(m)


def _delete_indexes(m: MapInfo, empty: tuple[int, ...] = (errno.ENOENT,)) -> None:
    # Slots can't be walked (get_next_key just counts up), so every index is deleted; an empty one
    # answers ENOENT (fd arrays), 0 (devmap, cpumap, xskmap) or EINVAL (sockmap).
    idx = np.arange(m.max_entries, dtype=np.uint32)
    base = idx.ctypes.data
    _each(m, "bpf_map_delete_elem", range(base, base + idx.nbytes, idx.itemsize), empty)


def _zero_values(m: MapInfo) -> None:
    # Arrays can't delete: zeros are written over every value, one update_batch per chunk (the kernel
    # spends ~250 ns an entry). A BPF_F_MMAPABLE array's values are also shared memory (8-byte aligned),
    # where a memset is ~100x faster; the kernel refuses that mmap when values hold timers or kptrs
    # (which only an update releases), and then the update path below does it.
    if m.flags & _F_MMAPABLE:
        size = (m.value_size + 7) // 8 * 8 * m.max_entries
        try:
            mem = mmap.mmap(m.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            pass
        else:
            with mem:
                blank = bytes(min(size, 1 << 20))
                for at in range(0, size, len(blank)):
                    mem[at:at + len(blank)] = blank[:size - at]
            return
    n = max(1, min(m.max_entries, _CHUNK, (4 << 20) // max(1, m.value_len)))
    zeros, count, fn = ctypes.create_string_buffer(n * m.value_len), ctypes.c_uint32(), _fn("bpf_map_update_batch")
    for start in range(0, m.max_entries, n):
        idx = np.arange(start, min(start + n, m.max_entries), dtype=np.uint32)
        count.value = len(idx)
        _check(m, "bpf_map_update_batch", fn(m.fd, idx.ctypes.data, zeros, ctypes.byref(count), None))


def _pop_all(m: MapInfo) -> None:
    pop, buf = _fn("bpf_map_lookup_and_delete_elem"), ctypes.create_string_buffer(max(1, m.value_size))
    for _ in range(_PASSES * m.max_entries + 1):
        rc = pop(m.fd, None, buf)
        if rc == -errno.ENOENT:
            return
        _check(m, "bpf_map_lookup_and_delete_elem", rc)
    raise _error(m, f"still not empty after {_PASSES * m.max_entries} pops (a program pushing?)", errno.EBUSY)


def _drain_ringbuf(m: MapInfo) -> None:
    # The kernel's layout: consumer page at offset 0 (writable), producer page at one page (read-only).
    # A reader discards by moving consumer_pos up to producer_pos; every reader shares these positions.
    page = mmap.PAGESIZE
    try:
        cons = mmap.mmap(m.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        prod = mmap.mmap(m.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    except OSError as e:
        raise _error(m, "mmap", e.errno or errno.EINVAL) from e
    with cons, prod, memoryview(cons) as c8, memoryview(prod) as p8, c8.cast("Q") as c, p8.cast("Q") as p:
        c[0] = p[0]  # native 8-byte store: the kernel never sees a torn consumer_pos


_Strategy = Callable[[MapInfo], None]
_STORAGE = "its keys are fds (socket, inode, task, cgroup) it cannot list; the owners' deaths empty it"
# How each type is emptied, or why it can't be. Types not here are unknown: not resettable.
_TYPES: dict[int, _Strategy | str] = {
    MapType.HASH: _delete_batch,
    MapType.PERCPU_HASH: _delete_batch,
    MapType.LRU_HASH: _delete_batch,
    MapType.LRU_PERCPU_HASH: _delete_batch,
    MapType.HASH_OF_MAPS: _delete_batch,
    MapType.LPM_TRIE: _delete_keys,
    MapType.DEVMAP_HASH: _delete_keys,
    MapType.SOCKHASH: _delete_keys,
    MapType.STACK_TRACE: _delete_keys,
    MapType.DEVMAP: _delete_indexes,
    MapType.CPUMAP: _delete_indexes,
    MapType.XSKMAP: _delete_indexes,
    MapType.SOCKMAP: functools.partial(_delete_indexes, empty=(errno.ENOENT, errno.EINVAL)),
    MapType.PROG_ARRAY: _delete_indexes,
    MapType.ARRAY_OF_MAPS: _delete_indexes,
    MapType.PERF_EVENT_ARRAY: _delete_indexes,
    MapType.CGROUP_ARRAY: _delete_indexes,
    MapType.ARRAY: _zero_values,
    MapType.PERCPU_ARRAY: _zero_values,
    MapType.QUEUE: _pop_all,
    MapType.STACK: _pop_all,
    MapType.RINGBUF: _drain_ringbuf,
    MapType.BLOOM_FILTER: "a bloom filter has no delete (a bit may be shared by many values); make a new map",
    MapType.USER_RINGBUF: "only the kernel consumes a user ring buffer",
    MapType.SK_STORAGE: _STORAGE,
    MapType.INODE_STORAGE: _STORAGE,
    MapType.TASK_STORAGE: _STORAGE,
    MapType.CGRP_STORAGE: _STORAGE,
}


def info(fd: int) -> MapInfo:
    """The map behind ``fd``, as BPF_OBJ_GET_INFO_BY_FD and /proc/self/fdinfo describe it."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            fdinfo = dict(line.partition(":")[::2] for line in f.read().splitlines())
    except OSError as e:
        raise OSError(e.errno, f"fd {fd}: {e.strerror}") from e
    if "map_id" not in fdinfo:  # get_info also answers for programs, links and BTF, with other structs
        raise ValueError(f"fd {fd} is not a BPF map (it is {os.readlink(f'/proc/self/fd/{fd}')})")
    raw, size = _Info(), ctypes.c_uint32(ctypes.sizeof(_Info))
    rc = _fn("bpf_obj_get_info_by_fd")(fd, ctypes.byref(raw), ctypes.byref(size))
    if rc < 0:
        raise OSError(-rc, f"map fd {fd}: bpf_obj_get_info_by_fd: {os.strerror(-rc)}")
    name = MapType(raw.type).name.lower() if raw.type in MapType._value2member_map_ else f"type {raw.type}"
    return MapInfo(fd, raw.id, raw.type, name, raw.key_size, raw.value_size, raw.max_entries, raw.map_flags,
                   raw.name.decode(errors="replace"), fdinfo.get("frozen", "0").strip() == "1",
                   int(fdinfo["flags"], 8) & os.O_ACCMODE == os.O_RDWR)


def resettable(fd: int) -> bool:
    """Whether reset(fd) knows how to empty this map."""
    return info(fd).resettable


def reset(fd: int) -> None:
    """Empty the map behind ``fd``: no keys, zeroed arrays, nothing left to read."""
    m = info(fd)
    how = _TYPES.get(m.type)
    if m.why_not is not None or not callable(how):
        raise NotResettable(f"{m} cannot be reset: {m.why_not}")
    how(m)


# Maps whose values are other kernel objects, given as fds and read back as ids. A loader may fill them
# while it loads the object (libbpf: `.values = { [0] = &prog }` in .maps), so their slots are state it sets.
FD_SLOT_TYPES: dict[int, str] = {MapType.PROG_ARRAY: "program", MapType.ARRAY_OF_MAPS: "map", MapType.HASH_OF_MAPS: "map"}


def fd_slots(fd: int) -> dict[bytes, int]:
    """What a program array or map of maps holds: key -> the id of the program or map in that slot (the
    syscall reads ids where the kernel keeps the objects). {} for a map of another type."""
    m = info(fd)
    if m.type not in FD_SLOT_TYPES:
        return {}
    if m.type == MapType.HASH_OF_MAPS:
        keys = np.frombuffer(b"".join(_keys(m)), np.uint8).reshape(-1, m.key_size)
    else:  # an array's slots can't be walked (get_next_key counts up): every index is looked up
        keys = np.arange(m.max_entries, dtype=np.uint32).view(np.uint8).reshape(-1, 4)
    ids = np.zeros(len(keys), np.uint32)
    kbase, vbase = keys.ctypes.data, ids.ctypes.data
    lookup = _fn("bpf_map_lookup_elem")
    rc = np.fromiter(map(lookup, itertools.repeat(fd), range(kbase, kbase + keys.nbytes, m.key_size),
                         range(vbase, vbase + ids.nbytes, ids.itemsize)), np.int64, len(keys))
    bad = rc[(rc < 0) & (rc != -errno.ENOENT)]
    if bad.size:
        raise OSError(int(-bad[0]), f"reading {m}: bpf_map_lookup_elem: {os.strerror(int(-bad[0]))}")
    return {keys[i].tobytes(): int(ids[i]) for i in np.flatnonzero(rc == 0)}


def object_id(fd: int) -> int:
    """The kernel's id of the program or map behind ``fd`` (bpf_prog_info and bpf_map_info both start
    with its type and id; the kernel takes a shorter struct)."""
    raw, size = (ctypes.c_uint32 * 2)(), ctypes.c_uint32(8)
    rc = _fn("bpf_obj_get_info_by_fd")(fd, raw, ctypes.byref(size))
    if rc < 0:
        raise OSError(-rc, f"fd {fd}: bpf_obj_get_info_by_fd: {os.strerror(-rc)}")
    return int(raw[1])


def fill(fd: int, entries: dict[bytes, bytes]) -> None:
    """Write each key's value (BPF_ANY): put back what a loader had put into the map."""
    if not entries:
        return
    update, m = _fn("bpf_map_update_elem"), info(fd)
    for key, value in entries.items():
        _check(m, "bpf_map_update_elem", update(fd, key, value, 0))
