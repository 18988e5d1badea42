"""What a tier does with frames: run them through the filter and account for each one."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.observers.outputs import Outputs


@dataclasses.dataclass
class Part:
    """One batch's result: a record per frame in send order."""

    records: np.ndarray
    accounted: int                  # frames with a verdict of their own
    stray: int = 0                  # frames pktassert did not send, judged by the filter meanwhile
    outputs: Outputs | None = None  # unit tier: the frames as the filter left them



class Path(Protocol):
    tier: str   # "live" or "unit"
    magic: int  # the trailer magic: tells the inspector where the records go (bpf/record.h)
    chunk: int  # most frames per send()

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray) -> Part:
        """Run ``wire``'s frames (send positions start...start+len, of ``total``); fill ``records``."""

    def close(self) -> None: ...
