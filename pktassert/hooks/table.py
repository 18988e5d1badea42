"""Where a filter hooks into the DUT: one table entry per hook, not a branch per hook in each module.

Each entry says what the loaders and the device under test need: the program type, the section
libbpf gives it, how its entry's argument is spelled, its verdict names, the define that builds our
inspector for it, and how to attach it to an interface inside a namespace (the namespace's end
takes it off again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pktassert.hooks.verdict import Actions, TcVerdict, Verdict


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str                      # the marker and fixture name
    prog_type: int                 # BPF_PROG_TYPE_*
    sections: tuple[str, ...]      # libbpf's SEC() names for it (legacy prefixes included)
    ctx: str                       # the entry's argument in C
    actions: type[Actions]         # its verdicts
    entry: str                     # our inspector's program for it
    attach: Callable[[Any, int, int, str], None]   # (pyroute2 IPRoute in the namespace, ifindex, fd, direction)
    define: str = ""               # what builds our inspector for this hook (bpf/inspector.c, inspector_libbpf.c)
    directions: tuple[str, ...] = ("ingress",)
    title: str = ""                # how messages name it

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)


def _xdp_attach(ipr: Any, ifindex: int, fd: int, direction: str) -> None:
    ipr.link("set", index=ifindex, xdp_fd=fd)  # native XDP (veth supports it)


# clsact's fixed parents: ingress and egress (include/uapi/linux/pkt_sched.h, TC_H_MIN_INGRESS/EGRESS)
_CLSACT_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}


def _tc_attach(ipr: Any, ifindex: int, fd: int, direction: str) -> None:
    """A clsact qdisc (if none yet) and our classifier in direct-action mode (pyroute2's tc)."""
    if not any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex)):
        ipr.tc("add", "clsact", ifindex)
    ipr.tc("add-filter", "bpf", ifindex, ":1", fd=fd, name="pktassert", parent=_CLSACT_PARENT[direction],
           classid=1, direct_action=True)


HOOKS: dict[str, Hook] = {
    "xdp": Hook("xdp", 6, ("xdp", "xdp.frags", "xdp_"), "struct xdp_md *", Verdict, "pktassert_xdp",
                _xdp_attach, title="XDP"),
    "tc": Hook("tc", 3, ("tc", "classifier", "tc/", "tcx/", "classifier/"), "struct __sk_buff *", TcVerdict,
               "pktassert_tc", _tc_attach, "PKTASSERT_HOOK_TC", ("ingress", "egress")),
}
UNSPEC = 0  # a section libbpf 1.1 does not know: typed by the section's prefix, as iproute2 did


def typed_by_section(section: str) -> Hook | None:
    """The hook an unknown (legacy) section name belongs to, by its prefix."""
    return next((h for h in HOOKS.values() if any(section.startswith(p) for p in h.sections)), None)
