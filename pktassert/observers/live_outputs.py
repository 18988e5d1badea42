"""The live tier's outputs: frames the filter sent out of the DUT (XDP_TX back to the peer, XDP_REDIRECT
to the honeypot or back out of the DUT's veth), as they arrived at pktassert's receiver, matched to
the packets they came from by the tag the inspector put in their XDP metadata."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pktassert.errors import PktassertError
from pktassert.hooks.verdict import Verdict
from pktassert.instruments.receiver import Receiver
from pktassert.instruments.record import const

WAIT_S = 2.0    # for TX'd frames, which always arrive at the peer
SETTLE_S = 0.02  # for redirected ones, which arrive only where a receiver listens


class LiveOutputs:
    """Output frame by send position, for the packets whose frame came out where pktassert listens."""

    def __init__(self, sent: Callable[[int], bytes], frames: dict[int, tuple[bytes, str]],
                 verdicts: np.ndarray) -> None:
        self._sent, self._frames, self._verdicts = sent, frames, verdicts  # verdicts by send position
        self.changed = np.array(sorted(p for p, (data, _) in frames.items() if data != sent(p)), np.int64)
        self.truncated = np.empty(0, np.int64)

    def positions(self) -> list[int]:
        """Send positions of the packets whose frame came out, in send order."""
        return sorted(self._frames)

    def where(self, pos: int) -> str | None:
        """Where the frame of the packet at ``pos`` arrived: "peer", "honeypot", or None."""
        hit = self._frames.get(pos)
        return hit[1] if hit else None

    def __getitem__(self, pos: int) -> bytes:
        hit = self._frames.get(pos)
        if hit is None:
            verdict = Verdict(int(self._verdicts[pos]))
            why = (f"its verdict was {verdict.name}: it did not leave the DUT"
                   if verdict not in (Verdict.TX, Verdict.REDIRECT)
                   else "it was redirected somewhere pktassert does not listen (the peer and the honeypot only), "
                        "or it arrived after the first frames whose bytes the receiver keeps per test")
            raise PktassertError(f"packet #{pos} has no output frame in the live tier: {why}. The live tier "
                                 f"captures frames that leave the DUT (TX, REDIRECT); the unit tier gives every "
                                 f"packet's frame as the filter left it.")
        return hit[0]


def collect(receiver: Receiver, records: np.ndarray, first_tag: int, sent: Callable[[int], bytes],
            places: dict[int, str]) -> LiveOutputs:
    """Wait for the frames these records (one per packet, in send order) say were sent out, and
    match them to their packets. ``places``: the receiver's ifindex -> a name for where frames land."""
    verdicts = records["verdict"]
    out = np.isin(verdicts, [Verdict.TX, Verdict.REDIRECT]) & ((records["note"] & const("N_OUT_UNTAGGED")) == 0)
    want = records["tag"][out]
    tx = records["tag"][out & (verdicts == Verdict.TX)]
    got: dict[int, tuple[bytes, str]] = {}
    deadline, moved, count = time.monotonic() + WAIT_S, time.monotonic(), -1
    while len(want):
        # Every frame that arrives has a summary (its tag); the first frames of a test also keep bytes.
        s = receiver.summaries()
        arrived = s["tag"][s["tagged"] & np.isin(s["ifindex"], list(places))]
        have_all, have_tx = np.isin(want, arrived).all(), np.isin(tx, arrived).all()
        if len(arrived) != count:
            count, moved = len(arrived), time.monotonic()
        if have_all or (have_tx and time.monotonic() - moved > SETTLE_S) or time.monotonic() > deadline:
            wanted = set(want.tolist())
            got = {f.tag - first_tag: (bytes(f.data[:f.length]), places[f.ifindex])
                   for f in receiver.frames() if f.tag is not None and f.tag in wanted and f.ifindex in places}
            break
        time.sleep(0.001)  # the receiver's ring is drained by polling; bounded by the deadline
    return LiveOutputs(sent, got, verdicts)
