"""The receiver: what came out of the DUT (XDP_TX, redirects, its stack's own frames), recorded at the far end.

One XDP program per session (bpf/receiver.c), attached to the peer's veth end and the honeypot's.
Every frame gets a summary (seq, tag, length, ifindex, hash); the first ``keep`` frames since
``clear()`` also keep their bytes. Records go through two BPF ring buffers, read here straight
from their mmapped pages with numpy rather than through a Python callback per record (bcc's
ring_buffer_poll): a million summaries drain in ~75 ms here, under a tenth of the flood's time.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import mmap
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Self

import numpy as np

from pktassert.bpf import DIR as HERE
from pktassert.errors import ProgramError
from pktassert.instruments.xdp_attachments import XdpAttachments
from pktassert.netns import Namespace

MAGIC = 0x706B746F                 # "pkto": the metadata is [magic be32][tag be32] at data_meta
SNAP = 2048                        # bytes kept and hashed per frame
SUMMARY_RING = 1 << 25             # 32 MiB: a 1M-frame flood's summaries (32 bytes each) undrained
FRAME_RING = 1 << 24               # 16 MiB: the default ``keep`` frames at full size, undrained
KEEP = 4096                        # 4096 x (24 + 2048) bytes: 8.5 MB, half the frame ring
COUNTERS = ("frames", "tagged", "untagged", "summaries_lost", "bytes_kept", "bytes_lost", "bytes_skipped")
_TAGGED, _KEPT = 1 << 31, 1 << 30
_BUSY, _DISCARD = 1 << 31, 1 << 30  # ring buffer record header bits (BPF_RINGBUF_*_BIT)
_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
_RAW = np.dtype([("hdr", "<u4"), ("pg", "<u4"), ("seq", "<u4"), ("tag", "<u4"), ("ifindex", "<u4"),
                 ("len_flags", "<u4"), ("hash", "<u8")])
SUMMARY = np.dtype([("seq", "<u4"), ("tag", "<u4"), ("ifindex", "<u4"), ("length", "<u4"),
                    ("tagged", "?"), ("kept", "?"), ("hash", "<u8")])


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame whose bytes were kept: ``data`` is its first 2048 bytes, ``length`` its full length."""

    seq: int
    tag: int | None  # None: it carried no pktassert metadata (the DUT stack's own frames)
    ifindex: int
    length: int
    hash: int
    data: bytes


def frame_hashes(frames: Sequence[bytes]) -> np.ndarray:
    """The receiver's hash of each frame (FNV-1a over the little-endian 8-byte words of its first
    2048 bytes, zero-padded), to compare floods that kept no bytes with what was expected."""
    caps = np.array([min(len(f), SNAP) for f in frames], np.int64)
    width = int(-(-caps.max(initial=0) // 8))  # as wide as the longest frame: a flood's are short
    words = np.zeros((len(frames), width), "<u8")
    raw = words.view(np.uint8)
    for i, f in enumerate(frames):
        raw[i, :caps[i]] = np.frombuffer(f[:SNAP], np.uint8)
    h = np.full(len(frames), _FNV_OFFSET, np.uint64)
    for j in range(width):
        h = np.where(caps > 8 * j, (h ^ words[:, j]) * np.uint64(_FNV_PRIME), h)
    return h


class _Ring:
    """The consumer side of a BPF ring buffer, through its mmapped pages."""

    def __init__(self, fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # The data pages are mapped twice in a row, so a record that wraps reads as one piece.
        self._prod = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data = memoryview(self._prod)[page:]
        self._page = page

    def span(self) -> tuple[int, int]:
        return struct.unpack_from("<Q", self._cons)[0], struct.unpack_from("<Q", self._prod)[0]

    def release(self, pos: int) -> None:
        struct.pack_into("<Q", self._cons, 0, pos)

    def summaries(self) -> np.ndarray:
        """All committed 32-byte records, copied out, and the space they took handed back."""
        cons, prod = self.span()
        raw = np.frombuffer(self.data, _RAW, (prod - cons) // _RAW.itemsize, cons & self.mask)
        busy = np.flatnonzero(raw["hdr"] & _BUSY)  # reserved but not yet written: stop there
        raw = raw[:busy[0]].copy() if len(busy) else raw.copy()
        self.release(cons + len(raw) * _RAW.itemsize)
        return raw[(raw["hdr"] & _DISCARD) == 0]

    def records(self) -> list[bytes]:
        out = []
        cons, prod = self.span()
        for _ in range(self.size // 8):  # bounded: never more records than the ring holds
            if cons >= prod:
                break
            off = cons & self.mask
            hdr = struct.unpack_from("<I", self.data, off)[0]
            if hdr & _BUSY:
                break
            n = hdr & ~(_BUSY | _DISCARD)
            if not hdr & _DISCARD:
                out.append(bytes(self.data[off + 8:off + 8 + n]))
            cons += (n + 8 + 7) & ~7
        self.release(cons)
        return out

    def close(self) -> None:
        self.data.release()
        self._prod.close()
        self._cons.close()


class Receiver:
    """The compiled receiver and its rings; one per session. ``attach`` it where frames come out,
    ``clear()`` it per test, read ``frames()``/``summaries()``/``counts()`` after."""

    def __init__(self, keep: int = KEEP, summary_ring: int = SUMMARY_RING, frame_ring: int = FRAME_RING) -> None:
        from bcc import BPF  # type: ignore[import-untyped]  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

        page = mmap.PAGESIZE
        try:
            self.bpf = BPF(src_file=str(HERE / "receiver.c").encode(),
                           cflags=[f"-DPA_RX_SUMMARY_PAGES={summary_ring // page}",
                                   f"-DPA_RX_FRAME_PAGES={frame_ring // page}"])
            self.fd = self.bpf.load_func(b"pktassert_receive", BPF.XDP).fd
        except Exception as e:  # noqa: BLE001 -- ours, not the user's: a kernel without ringbufs or xdp_load_bytes
            raise ProgramError(f"pktassert's receiver (bpf/receiver.c) does not load here: {e}") from None
        self._rings = (_Ring(self.bpf[b"pa_rx_summaries"].map_fd, summary_ring),
                       _Ring(self.bpf[b"pa_rx_frames"].map_fd, frame_ring))
        self._lock = threading.Lock()
        self._summaries: list[np.ndarray] = []
        self._frames: list[Frame] = []
        self._attached = XdpAttachments(self.fd)
        self.clear(keep)

    def attach(self, ns: Namespace, ifindex: int) -> None:
        """Attach to ``ifindex`` in ``ns`` (native XDP)."""
        self._attached.attach(ns, ifindex)

    def detach(self) -> None:
        self._attached.detach()

    def clear(self, keep: int | None = None) -> None:
        """Forget every record and counter; the next ``keep`` frames (default: as before) keep bytes."""
        with self._lock:
            self._drain()
            self._summaries.clear()
            self._frames.clear()
            state, counts = self.bpf[b"pa_rx_state"], self.bpf[b"pa_rx_counts"]
            value = state[ctypes.c_int(0)]
            value.next = 0
            if keep is not None:
                value.keep = keep
            state[ctypes.c_int(0)] = value  # the kernel leaves the lock word alone on updates
            for i in range(len(COUNTERS)):
                counts.clearitem(ctypes.c_int(i))

    def _drain(self) -> int:
        raw = self._rings[0].summaries()
        if len(raw):
            s = np.empty(len(raw), SUMMARY)
            for name in ("seq", "tag", "ifindex", "hash"):
                s[name] = raw[name]
            s["length"] = raw["len_flags"] & 0xFFFFFF
            s["tagged"] = (raw["len_flags"] & _TAGGED) != 0
            s["kept"] = (raw["len_flags"] & _KEPT) != 0
            self._summaries.append(s)
        for rec in self._rings[1].records():
            seq, tag, ifindex, lf, h = struct.unpack_from("<IIIIQ", rec)
            self._frames.append(Frame(seq, tag if lf & _TAGGED else None, ifindex, lf & 0xFFFFFF, h, rec[24:]))
        return len(raw)

    def drain(self) -> int:
        """Move what the rings hold into this object (frees ring space); how many summaries came."""
        with self._lock:
            return self._drain()

    def wait(self, frames: int, timeout: float = 2.0) -> bool:
        """Drain until ``frames`` frames have arrived since clear() (NAPI delivers them a little later)."""
        deadline = time.monotonic() + timeout
        while self.received() < frames:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    @contextlib.contextmanager
    def draining(self, interval: float = 0.005) -> Iterator[None]:
        """Drain from a thread while the block runs: for floods larger than the rings."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                self.drain()

        t = threading.Thread(target=run, name="pktassert-receiver", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            self.drain()

    def received(self) -> int:
        """Summaries collected since clear(), after draining the ring."""
        with self._lock:
            self._drain()
            return sum(len(s) for s in self._summaries)

    def summaries(self) -> np.ndarray:
        """Every frame since clear(), in arrival order: seq, tag, ifindex, length, tagged, kept, hash."""
        with self._lock:
            self._drain()
            if len(self._summaries) > 1:
                self._summaries[:] = [np.concatenate(self._summaries)]
            return self._summaries[0] if self._summaries else np.empty(0, SUMMARY)

    def frames(self, ifindex: int | None = None) -> list[Frame]:
        """The frames whose bytes were kept, in arrival order (optionally those from one interface)."""
        with self._lock:
            self._drain()
            frames = sorted(self._frames, key=lambda f: f.seq)
        return [f for f in frames if ifindex is None or f.ifindex == ifindex]

    def tagged(self, ifindex: int | None = None) -> dict[int, list[bytes]]:
        """Kept frames by the tag the DUT side put on them."""
        out: dict[int, list[bytes]] = {}
        for f in self.frames(ifindex):
            if f.tag is not None:
                out.setdefault(f.tag, []).append(f.data)
        return out

    def untagged(self, ifindex: int | None = None) -> list[Frame]:
        """Kept frames without pktassert metadata: what the DUT's stack sent by itself."""
        return [f for f in self.frames(ifindex) if f.tag is None]

    def counts(self) -> dict[str, int]:
        """The program's exact counters since clear(), summed over CPUs (see COUNTERS)."""
        t = self.bpf[b"pa_rx_counts"]
        return {name: int(t.sum(ctypes.c_int(i)).value) for i, name in enumerate(COUNTERS)}

    def close(self) -> None:
        self.detach()
        for r in self._rings:
            r.close()
        self.bpf.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
