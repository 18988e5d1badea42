"""What the filter decided for a frame."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np


class Verdict(enum.IntEnum):
    """XDP actions, numbered as the kernel numbers them (enum xdp_action)."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4

    def __str__(self) -> str:
        return self.name

    @classmethod
    def name_of(cls, value: int) -> str:
        """A name for any return value: an action's, or ABORTED(value) for one that is not an action."""
        return cls(value).name if 0 <= value <= cls.REDIRECT else f"ABORTED({value}: not an XDP action)"

    @classmethod
    def of(cls, ret: int) -> Verdict:
        """The action the kernel takes for a return value: anything that is not an XDP action is
        dropped as an exception, as ABORTED is."""
        return cls(ret) if 0 <= ret <= cls.REDIRECT else cls.ABORTED

    @classmethod
    def fold(cls, counts: Sequence[int] | np.ndarray) -> dict[Verdict, int]:
        """Counter slots (one per action, then one for values that are not actions) by action."""
        out = {v: int(counts[v]) for v in cls}
        out[cls.ABORTED] += int(counts[len(cls)])
        return out
