"""The traffic engine: frames sent from the peer namespace by BPF_PROG_TEST_RUN in live-frames mode.

Why this and not sendmmsg or PACKET_TX_RING (measured here, see benchmarks/inject.py): frames
enter the DUT through its real veth and XDP receive path, without an sk_buff being built for each
on the way; a reused raw socket manages ~220k frames/s through the same veth, this over 1M. Each
test-run call with repeat > 1 puts the program into the kernel's XDP dispatcher and takes it out
again, each an RCU grace period (~12 ms here, ~24 ms a call); a program already in the dispatcher
costs nothing there, so the engine's program is kept there by an XdpAnchor (pktassert/kernel/xdp_anchor.py:
attached to an interface that is down, in a namespace of its own). Frames go in calls of up to FRAMES.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

from pktassert.bpf import DIR as HERE
from pktassert.errors import ProgramError
from pktassert.kernel import libbpf
from pktassert.kernel.test_run import _Opts
from pktassert.kernel.xdp_anchor import XdpAnchor
from pktassert.machine import host
from pktassert.netns import Namespace

ARENA_BYTES = 1 << 22
ARENAS = 8                 # 32 MiB of frames per call
FRAMES = 1 << 18           # and at most 262,144 of them
MAX_FRAME = 2048           # trailer included
_LIVE_FRAMES = 1 << 1      # BPF_F_TEST_XDP_LIVE_FRAMES


class _XdpMd(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in
                ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex")]


def _map(table: object, size: int, write: bool = True) -> mmap.mmap:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
    return mmap.mmap(table.map_fd, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE, mmap.MAP_SHARED, prot)  # type: ignore[attr-defined]


class Sender:
    """The compiled engine program and its mmapped frame arena; one per session (compiling takes a second)."""

    def __init__(self) -> None:
        from bcc import BPF  # noqa: PLC0415 - bcc is Debian's and optional: imported where used, so the plugin loads (and skips) without it

        host.check("xdp-live-frames")
        try:
            self.bpf = BPF(src_file=str(HERE / "sender.c").encode(),
                           cflags=[f"-DPA_TX_ARENAS={ARENAS}", f"-DPA_TX_FRAMES={FRAMES}"])
            self.fd = self.bpf.load_func(b"pktassert_send", BPF.XDP).fd
        except Exception as e:  # noqa: BLE001 -- ours, not the user's: a kernel without live frames or store_bytes
            raise ProgramError(f"pktassert's traffic engine (bpf/sender.c) does not load here: {e}") from None
        self._maps = [_map(self.bpf[b"pa_tx_arena"], ARENAS * ARENA_BYTES),
                      _map(self.bpf[b"pa_tx_index"], FRAMES * 8), _map(self.bpf[b"pa_tx_state"], 32)]
        self.arena = np.frombuffer(self._maps[0], np.uint8)
        self.index = np.frombuffer(self._maps[1], np.uint64)
        self.state = np.frombuffer(self._maps[2], np.uint64)
        self._init = ctypes.create_string_buffer(MAX_FRAME)  # the frame each run starts from
        self._hold = XdpAnchor()
        self._hold.hold(self.fd)  # only slower where the kernel refuses

    def place(self, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> int:
        """Copy frames (back to back in ``data``) into the arena, in order, as many as fit; how many did.
        One copy per arena value: a frame that would straddle two starts the next one."""
        n = min(len(offsets), FRAMES)
        first = int(offsets[0])
        starts = offsets[:n].astype(np.int64) - first
        lengths = lengths[:n].astype(np.int64)
        ends = starts + lengths
        at = np.empty(n, np.int64)
        k = 0
        for value in range(ARENAS):
            if k == n:
                break
            base = int(starts[k])
            # (the program takes offsets up to ARENA_BYTES - MAX_FRAME only: what the verifier can bound)
            stop = int(np.searchsorted(ends, base + ARENA_BYTES - MAX_FRAME, side="right"))
            at[k:stop] = value * ARENA_BYTES + (starts[k:stop] - base)
            size = int(ends[stop - 1]) - base
            self.arena[value * ARENA_BYTES:value * ARENA_BYTES + size] = data[first + base:first + base + size]
            k = stop
        at = at[:k]
        self.index[:k] = ((at // ARENA_BYTES).astype(np.uint64) << np.uint64(40)) \
            | ((at % ARENA_BYTES).astype(np.uint64) << np.uint64(16)) | lengths[:k].astype(np.uint64)
        return k

    def send(self, n: int, ns: Namespace, ifindex: int, batch: int = 16) -> tuple[int, int]:
        """Send the first ``n`` placed frames out of ``ifindex`` in namespace ``ns``; (sent, refused).

        ``batch``: frames per burst between the kernel's flushes, after each of which the DUT's NAPI
        runs. At 64 the DUT veth's 256-frame ring overflowed when its stack answered every frame (a
        RST each: twice the softirq work); 16 keeps up and costs nothing measurable here."""
        self.state[:3] = 0
        md = _XdpMd(0, MAX_FRAME, 0, ifindex, 0, 0)
        opts = _Opts(sz=ctypes.sizeof(_Opts), data_in=ctypes.addressof(self._init), data_size_in=MAX_FRAME,
                     ctx_in=ctypes.addressof(md), ctx_size_in=ctypes.sizeof(md), repeat=n, flags=_LIVE_FRAMES,
                     batch_size=batch)
        with ns.entered():  # the ingress device is looked up in the caller's netns
            rc = libbpf.lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        if rc:
            raise OSError(-rc, f"BPF_PROG_TEST_RUN (live frames): {ctypes.get_errno()}")
        return int(self.state[1]), int(self.state[2])

    def close(self) -> None:
        del self.arena, self.index, self.state
        self._hold.close()  # its namespace goes, and the attachment with it
        for m in self._maps:
            m.close()
        self.bpf.cleanup()
