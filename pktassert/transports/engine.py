"""The live tier at speed: frames sent by the traffic engine (pktassert/instruments/sender.py) over the veth, records
read in bulk from the inspector's slots, every frame accounted for by the exact counters."""

from __future__ import annotations

import numpy as np
from pyroute2.ethtool.ioctl import IoctlEthtool

from pktassert.frames.wire import Wire
from pktassert.instruments.record import const
from pktassert.instruments.sender import FRAMES, Sender
from pktassert.netns import Endpoint
from pktassert.observers.collect import Collector
from pktassert.programs.loaded import Loaded
from pktassert.transports import veth
from pktassert.transports.accounting import Shortfall
from pktassert.transports.path import Part

QUIET_S = 1.0  # give up waiting for the DUT once its counters stop moving for this long


def xmit_errors(peer: Endpoint) -> int:
    """XDP frames the peer's veth could not hand to the DUT end (too long for it, or its ring full)."""
    assert peer.ns is not None
    with peer.ns.entered():
        ethtool = IoctlEthtool(peer.ifname)
        try:
            stats = dict(ethtool.get_statistics())
        finally:
            ethtool.close()
    return sum(v for k, v in stats.items() if k.endswith("_xdp_xmit_errors"))


class EnginePath:
    tier = "live"
    magic = const("MAGIC_ENGINE")  # records to the slots, read in bulk
    chunk = min(FRAMES, const("SLOTS"))

    def __init__(self, peer: Endpoint, dut: Endpoint, loaded: Loaded, collector: Collector, sender: Sender) -> None:
        """Frames sent by ``sender`` from ``peer`` to ``dut``, whose first XDP program is ``loaded``."""
        self.peer, self.dut, self.loaded, self.collector, self.sender = peer, dut, loaded, collector, sender

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray) -> Part:
        peer, collector = self.peer, self.collector
        before, errors_before = collector.tally(), xmit_errors(peer)
        # A veth drops a frame longer than its MTU allows, and on the XDP path every frame queued
        # behind it in the same bulk too: such frames are held back, and reported by number.
        long, limit = veth.too_long(self.dut, wire)
        fits = ~long
        offsets, lengths = wire.offsets[fits], wire.lengths[fits]
        sent = refused = done = 0
        while done < len(offsets):  # the arena may take fewer frames than a chunk (long frames)
            placed = self.sender.place(wire.data, offsets[done:], lengths[done:])
            s, r = self.sender.send(placed, peer.netns, peer.ifindex)
            sent, refused, done = sent + s, refused + r, done + placed
        delta = collector.await_counts(before, sent, QUIET_S)
        self.loaded.read_slots(int(wire.tags[0]), records)
        own = records["tag"] == wire.tags                     # written for this very frame
        tail = own & (records["verdict"] == const("PENDING"))  # entered, never returned to us
        have = own & ~tail
        if not have.all():
            entered = delta.entered
            raise Shortfall(
                total, np.flatnonzero(~have) + start,
                never_left=int(fits.sum()) - sent, never_left_why=f"{refused} refused by the engine",
                too_long=np.flatnonzero(~fits) + start, mtu=veth.link_mtu(self.dut), limit=limit,
                too_long_note=" (the engine holds them back: on a veth's XDP path one also drops the frames "
                              "queued behind it)",
                veth_dropped=max(0, sent - entered),
                veth_why=f"the engine sent {sent}, the filter was handed {entered}; the peer veth counted "
                         f"{xmit_errors(peer) - errors_before} XDP frames it could not pass on",
                tail_calls=int(tail.sum()), stray=delta.stray_total).error()
        return Part(records, int(have.sum()), delta.stray_total)

    def close(self) -> None:
        pass
