"""Where a filter hooks into the DUT: one table entry per hook, not a branch per hook in each module.

Each entry says what the loaders and the device under test need: the program type, the section
libbpf gives it, how its entry's argument is spelled, its verdict names, and how to attach it to
(and detach it from) an interface inside a namespace. XDP today; tc and nftables are next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str                      # the marker and fixture name
    prog_type: int                 # BPF_PROG_TYPE_*
    sections: tuple[str, ...]      # libbpf's SEC() names for it (legacy prefixes included)
    ctx: str                       # the entry's argument in C
    attach: Callable[[Any, int, int], None]   # (pyroute2 IPRoute in the namespace, ifindex, program fd)
    detach: Callable[[Any, int], None]


def _xdp_attach(ipr: Any, ifindex: int, fd: int) -> None:
    ipr.link("set", index=ifindex, xdp_fd=fd)  # native XDP (veth supports it)


def _xdp_detach(ipr: Any, ifindex: int) -> None:
    ipr.link("set", index=ifindex, xdp_fd=-1)


HOOKS: dict[str, Hook] = {
    "xdp": Hook("xdp", 6, ("xdp", "xdp.frags", "xdp_"), "struct xdp_md *", _xdp_attach, _xdp_detach),
}
UNSPEC = 0  # a section libbpf 1.1 does not know: typed by the section's prefix, as iproute2 did


def typed_by_section(section: str) -> Hook | None:
    """The hook an unknown (legacy) section name belongs to, by its prefix."""
    return next((h for h in HOOKS.values() if any(section.startswith(p) for p in h.sections)), None)
