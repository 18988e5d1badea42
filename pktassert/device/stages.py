"""A packet's way through more than one stage on the DUT: XDP first, then tc ingress.

The first stage's records come as for a single filter (every injected frame has one). A frame the
first stage passed carries its tag on in XDP metadata, and the tc inspector records it under the
same tag (bpf/inspector_tc.h): so every later stage's record is exact too, and a frame that stage
never saw (dropped, sent back, redirected by XDP) has none, and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pktassert.device.dut import XdpUnderTest
from pktassert.errors import AccountingError
from pktassert.frames.wire import Wire, sampled
from pktassert.hooks.verdict import Verdict
from pktassert.instruments.record import const
from pktassert.observers.collect import Tally
from pktassert.results.capture import Capture
from pktassert.results.columns import Columns, Facts
from pktassert.transports.path import Part

QUIET_S = 1.0


class Follower:
    """A stage after the first: its records for the packets of one inject(), as they come."""

    def __init__(self, dut: XdpUnderTest, n: int, step: int) -> None:
        self.dut = dut
        self.step = step
        kept = -(-n // step)
        self.records = np.zeros(kept, dut.collector.dtype)
        self.reached = np.zeros(kept, bool)
        self.exact = np.zeros(dut.loaded.actions.slots(), np.int64)
        self.accounted = 0
        self._before: Tally | None = None
        self.chunk: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.uint32), np.zeros(0, bool))

    def before_send(self) -> None:
        self._before = self.dut.collector.tally()

    def follow(self, magic: int, wire: Wire, first: Part, start: int, stop: int, ctx: bytes | None = None) -> None:
        """Records of this stage for the frames of ``wire`` (send positions start..stop), given the
        first stage's records for them (``first``, every frame's)."""
        reached = Verdict.from_column(first.records["verdict"]) == Verdict.PASS
        out = np.zeros(len(wire), self.dut.collector.dtype)
        if magic == const("MAGIC_UNIT"):
            # No stack in the unit tier: this stage's program runs on what the first stage passed, as
            # the first stage left each frame.
            at = np.flatnonzero(reached)
            if len(at):
                assert first.outputs is not None
                frames = [first.outputs[start + int(i)] for i in at]
                w = Wire.build(frames, magic, self.dut.loaded.take_tags(len(frames)))
                out[at] = self.dut._unit.send(w, 0, len(frames), ctx=ctx).records
            have = reached.copy()
        elif magic == const("MAGIC_ENGINE"):
            assert self._before is not None
            self.dut.collector.await_counts(self._before, int(reached.sum()), QUIET_S)
            self._before = self.dut.collector.tally()
            self.dut.loaded.read_slots(int(wire.tags[0]), out)
            have = (out["tag"] == wire.tags) & (out["verdict"] != const("PENDING"))
        else:
            assert self._before is not None
            got = self.dut.collector.collect(int(wire.tags[0]), out, self._before, ~reached)
            have = got.have
            self._before = self.dut.collector.tally()
        missing = np.flatnonzero(reached & ~have)
        if len(missing):
            raise AccountingError(
                f"{len(missing)} of {int(reached.sum())} packets that the XDP stage passed have no record from the "
                f"{self.dut.hook.title} stage (packet #{int(missing[0]) + start} first): they never reached it. "
                f"No verdict is given for them.")
        out[~reached] = 0
        self.accounted += int(reached.sum())
        self.chunk = (out["verdict"], reached)  # this chunk's verdicts here, every frame's (fates fold them in)
        self.exact += self.dut.loaded.actions.tally(out["verdict"][reached])
        into, rows = sampled(start, stop, self.step)
        self.records[into] = out[rows]
        self.reached[into] = reached[rows]

    def capture(self, first: Columns, facts: Facts) -> Capture:
        """This stage's Capture: the packets that reached it, by their send positions (``first``: the first
        stage's columns, ``facts``: the call's)."""
        keep = self.reached
        return Capture(Columns(self.records[keep], first.index[keep]),
                       Facts(facts.frame, sent=facts.sent, accounted=self.accounted, tier=facts.tier, step=facts.step,
                             exact=self.exact if facts.step > 1 else None, actions=self.dut.loaded.actions,
                             hook=self.dut.hook.name, origin=facts.origin))


def take_tags(loaded: list[Any], n: int) -> int:
    """``n`` tags fresh for every stage's program: a frame keeps its tag through all of them."""
    if len(loaded) == 1:
        return int(loaded[0].take_tags(n))
    first = max(int(x.take_tags(0)) for x in loaded)
    if first + n >= loaded[0].TAG_LIMIT:
        for x in loaded:
            x.forget_tags()
        first = 1
    for x in loaded:
        x.set_next_tag(first + n)
    return first
