"""Send crafted frames from the peer namespace into the DUT and wait for the inspector's account."""

from __future__ import annotations

import errno
import socket
from typing import Any, Mapping

import numpy as np
from scapy.layers.l2 import Ether

from pktassert import flood
from pktassert.capture import Capture
from pktassert.dut import XdpUnderTest
from pktassert.errors import AccountingError, InjectError
from pktassert.frames import check_size, to_frames
from pktassert.record import const

MTU = 1500
CHUNK = 65536  # frames per send-then-collect round: well inside the ring buffer's room
RETRIES = 50  # per refused frame, each after a 1 ms wait on the ring buffer


class Injector:
    """The ``inject`` fixture: ``inject(packets, count=1, vary=None) -> Capture``."""

    def __init__(self, xdp: XdpUnderTest) -> None:
        self.xdp = xdp
        peer = xdp.peer
        # A raw socket opened inside the peer netns stays there; protocol 0 means it never receives.
        self.sock = peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((peer.ifname, 0))
        self._tag = 0
        self._trailer_magic = const("PA_TAG_MAGIC").to_bytes(4, "big")

    def __call__(self, packets: Any, count: int = 1, vary: Mapping[str, Any] | None = None) -> Capture:
        if not isinstance(count, int) or count < 1:
            raise InjectError(f"count={count!r}: give a positive whole number of packets.")
        if count > 1 or vary:
            if isinstance(packets, (list, tuple)) and len(packets) != 1:
                raise InjectError("count= and vary= take one template packet, not a list.")
            template = to_frames(packets, self.xdp.peer, self.xdp.dut)[0]
            rows = flood.build(Ether(template), count, vary)
            frames: list[bytes] | np.ndarray = rows
        else:
            frames = to_frames(packets, self.xdp.peer, self.xdp.dut)
        check_size(frames, MTU)
        return self._send(frames)

    def _trailer(self, tags: np.ndarray) -> np.ndarray:
        out = np.empty((len(tags), 8), np.uint8)
        out[:, :4] = np.frombuffer(self._trailer_magic, np.uint8)
        out[:, 4:] = tags.astype(">u4").view(np.uint8).reshape(-1, 4)
        return out

    def _send(self, frames: list[bytes] | np.ndarray) -> Capture:
        n = len(frames)
        collector = self.xdp.collector
        parts, seen_total = [], 0
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            first = self._tag
            self._tag += stop - start
            trailers = self._trailer(np.arange(first, self._tag, dtype=np.uint64))
            before = collector.tally()
            if isinstance(frames, np.ndarray):
                wire = np.hstack([frames[start:stop], trailers])
            else:
                wire = [f + t.tobytes() for f, t in zip(frames[start:stop], trailers)]
            undelivered = self._send_all(wire)
            got = collector.collect(first, stop - start, before, undelivered)
            seen_total += got.seen
            if not got.have.all():
                self._fail(n, start, got)
            parts.append(got.records)
        records = parts[0] if len(parts) == 1 else np.concatenate(parts)
        frame = (lambda i: frames[i].tobytes()) if isinstance(frames, np.ndarray) else frames.__getitem__
        return Capture(records, frame, sent=n, accounted=seen_total)

    def _send_all(self, wire: list[bytes] | np.ndarray) -> np.ndarray:
        """Send every frame; True where the veth refused one (the filter never saw it)."""
        refused = np.zeros(len(wire), bool)
        retries = RETRIES
        for i, frame in enumerate(wire):
            for _ in range(retries + 1):
                try:
                    self.sock.send(frame)
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    # The veth's queue to the DUT is full (or the DUT is down): let the inspector
                    # drain, then try again, a bounded number of times.
                    self.xdp.collector.poll(1)
            else:
                refused[i] = True
                retries = 0  # the link is not draining: don't wait again for every frame
        return refused

    def _fail(self, n: int, start: int, got: Any) -> None:
        missing = int((~got.have).sum())
        first_missing = start + int(np.flatnonzero(~got.have)[0])
        refused = int(got.undelivered.sum())
        vanished = max(0, missing - refused - got.lost)
        raise AccountingError(
            f"{missing} of {n} injected packets have no verdict (first: packet #{first_missing}). "
            f"{refused} never reached the filter (the veth refused them: queue full or DUT link down), "
            f"{got.lost} reached it but their records were lost (ring buffer full), "
            f"{vanished} vanished between the socket and the filter; "
            f"{got.stray} frames not injected by pktassert were seen meanwhile.")

    def close(self) -> None:
        self.sock.close()
