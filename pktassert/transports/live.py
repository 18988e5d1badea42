"""The live tier: frames sent from the peer namespace over the veth, judged by the attached program."""

from __future__ import annotations

import errno
import socket
import time

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.instruments.record import const
from pktassert.netns import Endpoint
from pktassert.netns.topology_pool import later
from pktassert.observers.collect import Collected, Collector
from pktassert.transports import veth
from pktassert.transports.accounting import Shortfall
from pktassert.transports.path import Part

RETRIES = 50  # per refused frame, each after a 1 ms wait on the ring buffer


class LivePath:
    tier = "live"
    magic = const("MAGIC_RING")  # records through the ring buffer
    chunk = 16384  # frames per send-then-collect round: well inside the ring buffer's room (pktassert/programs/bcc_program.py)

    def __init__(self, peer: Endpoint, dut: Endpoint, collector: Collector) -> None:
        """Frames from ``peer`` over the veth to ``dut``, their records through ``collector``."""
        self.peer, self.dut, self.collector = peer, dut, collector
        # A raw socket opened inside the peer netns stays there; protocol 0 means it never receives.
        self.sock = peer.netns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((peer.ifname, 0))

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray,
             at: np.ndarray | None = None) -> Part:
        """``at``: when to send each frame, in seconds on time.monotonic() (paced sending)."""
        collector = self.collector
        before, dropped_before = collector.tally(), self._veth_dropped()
        undelivered = self._send_all(wire, at)
        got = collector.collect(int(wire.tags[0]), records, before, undelivered)
        if not got.have.all():
            raise self._shortfall(wire, total, start, got, self._veth_dropped() - dropped_before).error()
        return Part(got.records, len(wire), got.delta.stray_total)

    def _veth_dropped(self) -> int:
        """Frames the peer's veth accepted from the socket and dropped (its tx_dropped counter)."""
        peer = self.peer
        return int(peer.netns.ipr.get_links(peer.ifindex)[0].get_attr("IFLA_STATS64")["tx_dropped"])

    def _send_all(self, wire: Wire, when: np.ndarray | None = None) -> np.ndarray:
        """Send every frame (each at its time, if given); True where the veth refused one."""
        refused = np.zeros(len(wire), bool)
        retries = RETRIES
        send, data = self.sock.send, wire.data.data
        times = when.tolist() if when is not None else None
        for i, (at, length) in enumerate(zip(wire.offsets.tolist(), wire.lengths.tolist())):
            if times is not None:
                wait = times[i] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # pacing: the time itself is what we wait for
            for _ in range(retries + 1):
                try:
                    send(data[at:at + length])
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    # The veth's queue to the DUT is full (or the DUT is down): let the inspector
                    # drain, then try again, a bounded number of times.
                    self.collector.poll(1)
            else:
                refused[i] = True
                retries = 0  # the link is not draining: don't wait again for every frame
        return refused

    def _shortfall(self, wire: Wire, n: int, start: int, got: Collected, dropped: int) -> Shortfall:
        missing = ~got.have
        refused = int(got.undelivered.sum())
        delta = got.delta
        tail_calls = max(0, delta.entered - delta.completed)
        too_long, limit = veth.too_long(self.dut, wire)
        long = missing & ~got.undelivered & too_long
        return Shortfall(
            n, np.flatnonzero(missing) + start,
            never_left=refused, never_left_why="the veth's queue refused them (ENOBUFS)",
            veth_dropped=max(0, min(dropped, int(missing.sum()) - refused) - int(long.sum())),
            veth_why="counted in the peer veth's tx_dropped: queue full, DUT link down or frame too long",
            too_long=np.flatnonzero(long) + start, mtu=veth.link_mtu(self.dut), limit=limit,
            tail_calls=tail_calls, lost=delta.lost, stray=delta.stray_total)

    def close(self) -> None:
        # Off the test's path: an AF_PACKET socket's close waits for an RCU grace period (~10 ms), and
        # this one (protocol 0) never receives, so nothing can be seen of it meanwhile.
        later(self.sock.close)
