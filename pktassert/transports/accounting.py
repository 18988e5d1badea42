"""The one error for injected frames without a verdict of their own: how many, which, and why."""

from __future__ import annotations

import dataclasses

import numpy as np

from pktassert.errors import AccountingError

SHOWN = 8  # packet numbers listed per reason

TAIL_CALL_FIX = ("pktassert does not observe tail calls out of the filter in the live tier. Fix: run this test in the "
                 "unit tier (@pytest.mark.parametrize(\"tier\", [\"unit\"], indirect=True)), where the tail-called "
                 "program's verdict is the test run's return value")


def _numbers(positions: np.ndarray) -> str:
    shown = ", ".join(f"#{int(p)}" for p in positions[:SHOWN])
    return shown + (f", … ({len(positions)} in all)" if len(positions) > SHOWN else "")


@dataclasses.dataclass
class Shortfall:
    """Injected frames without their own record, sorted by what happened to them."""

    total: int                 # packets in this inject()
    missing: np.ndarray        # send positions without a verdict
    never_left: int = 0        # refused before reaching the wire
    never_left_why: str = ""
    veth_dropped: int = 0      # sent, but the filter never saw them
    veth_why: str = ""         # how we know
    too_long: np.ndarray | None = None  # send positions of missing frames longer than the DUT link takes
    mtu: int = 0               # the DUT link's MTU, and the longest frame it takes as crafted
    limit: int = 0
    too_long_note: str = ""
    tail_calls: int = 0        # entered the filter, left it through a tail call (live tier)
    lost: int = 0              # reached the filter, record lost (ring buffer full)
    stray: int = 0             # frames pktassert did not send, seen meanwhile

    def error(self) -> AccountingError:
        n = len(self.missing)
        parts = []
        if self.never_left:
            parts.append(f"{self.never_left} never left the peer ({self.never_left_why})")
        long = 0 if self.too_long is None else len(self.too_long)
        if long:
            parts.append(f"{long} are longer than the DUT link's MTU ({self.mtu}) lets through (frames up to "
                         f"{self.limit} bytes as crafted), which a veth drops before the filter{self.too_long_note}: "
                         f"packets {_numbers(self.too_long if self.too_long is not None else np.empty(0))}")
        if self.veth_dropped:
            parts.append(f"{self.veth_dropped} were dropped by the DUT's veth before the filter"
                         + (f" ({self.veth_why})" if self.veth_why else ""))
        if self.tail_calls:
            parts.append(f"{self.tail_calls} left the filter through a tail call: {TAIL_CALL_FIX}")
        if self.lost:
            parts.append(f"{self.lost} reached the filter but their records were lost (ring buffer full)")
        known = self.never_left + long + self.veth_dropped + self.tail_calls + self.lost
        if n > known:
            parts.append(f"{n - known} vanished between the sender and the filter")
        stray = f" {self.stray} frames not sent by pktassert reached the filter meanwhile." if self.stray else ""
        return AccountingError(f"{n} of {self.total} injected packets have no verdict (first: packet "
                               f"#{int(self.missing[0])}). " + "; ".join(parts)
                               + f". Without a verdict: packets {_numbers(self.missing)}." + stray)
