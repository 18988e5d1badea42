"""What the filter decided for a frame."""

from __future__ import annotations

import enum


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
        """A name for any return value, including ones that are not XDP actions."""
        try:
            return cls(value).name
        except ValueError:
            return f"INVALID({value})"
