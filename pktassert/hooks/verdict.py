"""What the filter decided for a frame: each hook's actions, numbered as the kernel numbers them."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np


class Actions(enum.IntEnum):
    """What every hook's action enum offers (no members here: XDP's and tc's are below)."""

    def __str__(self) -> str:
        return self.name

    @classmethod
    def first(cls) -> int:
        return min(int(v) for v in cls)

    @classmethod
    def slots(cls) -> int:
        """Counter slots per group for this hook (record.h): one per action, from the lowest."""
        return max(int(v) for v in cls) - cls.first() + 1

    @classmethod
    def from_column(cls, column: np.ndarray) -> np.ndarray:
        """The record's verdict column (u32) as signed action values."""
        return column.astype(np.uint32).view(np.int32)

    @classmethod
    def tally(cls, column: np.ndarray) -> np.ndarray:
        """How many records of a verdict column took each action, by slot (exact counts)."""
        slots = cls.from_column(column).astype(np.int64) - cls.first()
        return np.bincount(slots[(slots >= 0) & (slots < cls.slots())], minlength=cls.slots())

    @classmethod
    def slot(cls, value: int) -> int:
        return int(value) - cls.first()

    @classmethod
    def of(cls, ret: int) -> Actions:
        raise NotImplementedError

    @classmethod
    def continuing(cls) -> frozenset[int]:
        """The actions after which the frame goes on into the stack (to netfilter and sockets)."""
        raise NotImplementedError

    @classmethod
    def name_of(cls, value: int) -> str:
        raise NotImplementedError

    @classmethod
    def fold(cls, counts: Sequence[int] | np.ndarray) -> dict:
        return {v: int(counts[cls.slot(v)]) for v in cls}


class Verdict(Actions):
    """XDP actions, numbered as the kernel numbers them (enum xdp_action)."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4

    @classmethod
    def continuing(cls) -> frozenset[int]:
        return frozenset({cls.PASS})

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
    def fold(cls, counts: Sequence[int] | np.ndarray) -> dict:
        """Counter slots (one per action, then one for values that are not actions) by action."""
        out = {v: int(counts[v]) for v in cls}
        out[cls.ABORTED] += int(counts[len(cls)])
        return out


class TcVerdict(Actions):
    """tc actions (TC_ACT_*, include/uapi/linux/pkt_cls.h), signed as the kernel has them."""

    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7
    TRAP = 8

    @classmethod
    def acting(cls) -> frozenset[int]:
        """What a direct-action classifier may return and have done (cls_bpf_exec_opcode)."""
        return frozenset({-1, 0, 2, 4, 7, 8})

    @classmethod
    def continuing(cls) -> frozenset[int]:
        return frozenset({cls.UNSPEC, cls.OK})  # with no next classifier, UNSPEC goes on as OK does

    @classmethod
    def of(cls, ret: int) -> TcVerdict:
        """The action the kernel takes: any other value is TC_ACT_UNSPEC (the next filter; with none,
        the packet goes on as with OK)."""
        return cls(ret) if ret in cls.acting() else cls.UNSPEC

    @classmethod
    def name_of(cls, value: int) -> str:
        if value in cls.acting():
            return cls(value).name
        if -1 <= value <= 8:
            return f"UNSPEC({value}: {cls(value).name}, which a direct-action classifier's caller treats as UNSPEC)"
        return f"UNSPEC({value}: not a TC action)"
