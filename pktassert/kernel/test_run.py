"""BPF_PROG_TEST_RUN through libbpf: run a loaded program on a frame we hand it, no traffic.

Uses Debian's libbpf1 (bpf_prog_test_run_opts); the struct below is libbpf's bpf_test_run_opts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import itertools
import os

import numpy as np

from pktassert.errors import InjectError
from pktassert.hooks.table import HOOKS
from pktassert.kernel import libbpf

ETH_HLEN = 14


class _Opts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


_OPTS = np.dtype(_Opts)  # the same struct as a numpy record: a batch's options are built vectorized


def _prog_type(fd: int) -> int:
    """The program's BPF_PROG_TYPE_*: struct bpf_prog_info's first field (the kernel fills what we ask for)."""
    info, size = ctypes.c_uint32(0), ctypes.c_uint32(ctypes.sizeof(ctypes.c_uint32))
    if libbpf.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(err)}")
    return info.value


class TestRunRefused(Exception):
    """The kernel refused a test run (BPF_PROG_TEST_RUN) with ``err``."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.err = err


@dataclasses.dataclass(frozen=True)
class TestRun:
    """One test run: the program's return value, the frame as it left it, and the kernel's timing."""

    __test__ = False  # not a pytest test class, despite the name

    retval: int
    data: bytes
    duration_ns: int


@dataclasses.dataclass
class Batch:
    """Many test runs, one per frame: arrays in frame order."""

    __test__ = False

    error: np.ndarray     # 0, or the errno the kernel gave (ENOSPC: the output was cut at the stride)
    retval: np.ndarray
    size_out: np.ndarray  # the output frame's full length
    out: np.ndarray       # (n, stride) bytes: the output frames, each cut at the stride (valid
                          # until the runner's next batch)


class TestRunner:
    """Runs one loaded program; reuses its buffers across calls."""

    __test__ = False
    MAX_FRAME = 1 << 17  # above the kernel's limit for a test run's frame (73,152 bytes seen)

    def __init__(self, prog_fd: int, max_frame: int = MAX_FRAME, hook: str | None = None) -> None:
        self.prog_fd = prog_fd
        self._hook = hook  # "xdp" or "tc" (pktassert/hooks/table.py); asked of the kernel when not given
        self._out = ctypes.create_string_buffer(max_frame + 256)
        self._opts = _Opts(sz=ctypes.sizeof(_Opts))
        self._batch: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def hook(self) -> str:
        """Where the program hooks, by its type as the kernel has it (BPF_OBJ_GET_INFO_BY_FD)."""
        if self._hook is None:
            kind = _prog_type(self.prog_fd)
            self._hook = next((h.name for h in HOOKS.values() if h.prog_type == kind), "xdp")
        return self._hook

    def _call(self, frame: bytes, repeat: int) -> int:
        """0, or the errno the kernel gave."""
        o = self._opts
        buf = ctypes.create_string_buffer(bytes(frame), len(frame))
        o.data_in, o.data_size_in = ctypes.addressof(buf), len(frame)
        o.data_out, o.data_size_out = ctypes.addressof(self._out), len(self._out)
        o.repeat = repeat
        return 0 if libbpf.lib().bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(o)) == 0 else ctypes.get_errno()

    def run(self, frame: bytes, repeat: int = 1, what: str = "the packet") -> TestRun:
        """One frame, ``repeat`` times. A frame the kernel refuses raises TestRunRefused with the kernel's errno
        (what it means for the user's frame is the unit tier's to say: transports/unit.py refusal())."""
        if len(frame) < ETH_HLEN:
            raise InjectError(f"{what}, a {len(frame)}-byte frame, is shorter than an Ethernet header ({ETH_HLEN} "
                              f"bytes); the kernel runs {HOOKS[self.hook].title} programs only on whole frames.")
        err = self._call(frame, repeat)
        if err:
            raise TestRunRefused(err)
        o = self._opts
        return TestRun(o.retval, self._out.raw[:o.data_size_out], o.duration)

    def run_batch(self, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, stride: int,
                  ctx: bytes | None = None) -> Batch:
        """Run the program once on each frame ``data[offsets[i]:offsets[i] + lengths[i]]``.

        The options for every run are laid out in one numpy array first, so the Python loop
        is one call per frame and nothing else; libbpf writes each run's results back into them.
        """
        n = len(offsets)
        if data.dtype != np.uint8 or not data.flags.c_contiguous:
            raise ValueError("run_batch() takes one contiguous uint8 buffer")
        # Reused between batches: fresh buffers would cost a page fault per 4 KiB on every batch.
        if self._batch is None or self._batch[0].size < n * stride or len(self._batch[1]) < n:
            self._batch = (np.zeros(n * stride, np.uint8), np.zeros(n, _OPTS))
        out = self._batch[0][:n * stride].reshape(n, stride)
        opts = self._batch[1][:n]
        opts["sz"] = _OPTS.itemsize
        opts["data_in"] = data.ctypes.data + offsets.astype(np.uint64)
        opts["data_size_in"] = lengths
        opts["data_out"] = out.ctypes.data + np.arange(n, dtype=np.uint64) * stride
        opts["data_size_out"] = stride
        opts["repeat"] = 1
        opts["retval"] = 0
        if ctx is not None:  # one context for every run (tc: the sk_buff's mark, priority, cb...)
            self._ctx = ctypes.create_string_buffer(ctx, len(ctx))
            opts["ctx_in"], opts["ctx_size_in"] = ctypes.addressof(self._ctx), len(ctx)
        else:
            opts["ctx_in"], opts["ctx_size_in"] = 0, 0
        run, fd, first = libbpf.lib().bpf_prog_test_run_opts, self.prog_fd, opts.ctypes.data
        # map() keeps the loop in C: no Python frame per call.
        rc = np.fromiter(map(run, itertools.repeat(fd, n), range(first, first + n * _OPTS.itemsize, _OPTS.itemsize)),
                         np.int64, n)
        return Batch(-rc, opts["retval"].copy(), opts["data_size_out"].astype(np.int64), out)

    @functools.cache  # noqa: B019 -- one runner per loaded program, kept as long as it is
    def max_len(self) -> int:
        """The largest frame the kernel takes for this program, found by trying: page size minus
        XDP headroom and tailroom, unless the program handles multi-buffer frames."""
        lo, hi = ETH_HLEN, self.MAX_FRAME
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._call(bytes(mid), 1) == 0:
                lo = mid
            else:
                hi = mid - 1
        return lo
