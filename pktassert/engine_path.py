"""The live tier at speed: frames sent by the traffic engine (bpf/sender.py) over the veth, records
read in bulk from the inspector's slots, every frame accounted for by the exact counters."""

from __future__ import annotations

import time

import numpy as np

from pktassert.bpf.sender import FRAMES, Sender
from pktassert.collect import Tally
from pktassert.dut import XdpUnderTest
from pktassert.errors import AccountingError
from pktassert.path import Part
from pktassert.record import const
from pktassert.wire import Wire

QUIET_S = 1.0  # give up waiting for the DUT once its counters stop moving for this long


class EnginePath:
    tier = "live"
    magic = const("PA_UNIT_MAGIC")  # records to the slots, read in bulk
    chunk = min(FRAMES, const("PA_UNIT_SLOTS"))

    def __init__(self, xdp: XdpUnderTest, sender: Sender) -> None:
        self.xdp, self.sender = xdp, sender

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray) -> Part:
        peer, collector = self.xdp.peer, self.xdp.collector
        before = collector.tally()
        sent = refused = 0
        done = 0
        while done < len(wire):  # the arena may take fewer frames than a chunk (long frames)
            placed = self.sender.place(wire.data, wire.offsets[done:], wire.lengths[done:])
            s, r = self.sender.send(placed, peer.ns, peer.ifindex)
            sent, refused, done = sent + s, refused + r, done + placed
        seen = self._await(before, sent)
        self.xdp.loaded.read_slots(int(wire.tags[0]), records)
        have = records["tag"] == wire.tags
        if not have.all():
            missing = int((~have).sum())
            first = start + int(np.flatnonzero(~have)[0])
            raise AccountingError(
                f"{missing} of {total} injected packets have no verdict (first: packet #{first}). "
                f"{len(wire) - sent} never left the peer ({refused} refused by the engine), "
                f"{sent - seen} were sent but never reached the filter (the veth's XDP queue was full), "
                f"{max(0, seen - int(have.sum()))} reached it but their records were lost.")
        return Part(records, seen)

    def _await(self, before: Tally, sent: int) -> int:
        """Wait until the DUT's counters have seen ``sent`` more tagged frames (its NAPI may still be
        working when the send returns), or stop moving."""
        collector = self.xdp.collector
        last, moved = -1, time.monotonic()
        while True:
            seen = collector.tally().tagged - before.tagged
            if seen >= sent:
                return seen
            if seen != last:
                last, moved = seen, time.monotonic()
            elif time.monotonic() - moved > QUIET_S:
                return seen
            time.sleep(0.0005)  # the counters are a map: nothing to block on; a short, bounded poll

    def close(self) -> None:
        pass
