"""compare(A, B, traffic): the same packets through two subjects in the real kernel, one after the other,
and where their answers differ."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from pktassert.compare.diff import Diff
from pktassert.compare.sides import Side, resolved
from pktassert.errors import InjectError, PktassertError, ProgramError
from pktassert.observers.fate import CODES, STAGE, Fate
from pktassert.results.capture import Capture
from pktassert.session import Session
from pktassert.traffic.source import Traffic

MADE: list[Diff] = []  # every Diff of this process since the plugin last cleared it (a test's evidence)
# Fates that say the same of the subject under test. The stack answering a packet (an ICMP error, a reset)
# and dropping it are alike: the kernel rate-limits its ICMP errors, so which of the two a flood's packet
# meets depends on timing, not on the filter. Across kinds (an XDP filter and a rule set that claim one
# policy) a drop is a drop, whoever dropped it.
_SAME = np.arange(len(Fate))
_SAME[CODES[Fate.ANSWERED]] = CODES[Fate.DROPPED]
_SAME_DROP = _SAME.copy()
_SAME_DROP[CODES[Fate.NETFILTER_DROPPED]] = CODES[Fate.FILTER_DROPPED]


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise PktassertError(f"compare({what}={value!r}): one for each side, (A's, B's), or one for both.")
        return value[0], value[1]
    return value, value


def compare(a: Any, b: Any, traffic: Any, *, func: str | Sequence[str | None] | None = None,
            hook: str | Sequence[str] = "xdp", tier: str | None = None, cflags: Sequence[str] = (),
            session: Session | None = None) -> Diff:
    """Send ``traffic`` through ``a`` and through ``b`` and say where they answered differently.

    ``a``/``b``: a path (bcc .c, libbpf .bpf.c, ELF .o, nftables .nft), ``git:REV:PATH``, a BccSource,
    LibbpfSource or ObjectFile, or a Side. ``func``/``hook``: the entry function and hook ("xdp", "tc"),
    one for both or a pair (A's, B's). ``traffic``: a Traffic, a Capture (what it sent), packets.
    ``tier``: "unit" (test runs: verdicts) or "live" (verdicts, fates and rules); a rule set needs "live",
    the default then. Two filters of one hook compare by verdict (unit) or verdict and fate (live); of
    different kinds, by what the verdict does (passed on, dropped, sent) or by fate, a drop being a drop."""
    funcs, hooks = _pair(func, "func"), _pair(hook, "hook")
    sent = Traffic.of(traffic)
    if not len(sent):
        raise InjectError("compare(): the traffic holds no packet. Fix: packets, Traffic.flood(...), Traffic.pcap(...), "
                          "strategies.boundaries(...).")
    with contextlib.ExitStack() as stack:
        side_a = stack.enter_context(resolved(a, funcs[0], hooks[0], tuple(cflags)))
        side_b = stack.enter_context(resolved(b, funcs[1], hooks[1], tuple(cflags)))
        chosen = tier or ("live" if "nftables" in (side_a.kind, side_b.kind) else "unit")
        if chosen == "unit" and "nftables" in (side_a.kind, side_b.kind):
            raise ProgramError("compare(tier=\"unit\"): a rule set is judged by the kernel's stack, which the unit tier "
                               "does not have. Fix: tier=\"live\".")
        s = session if session is not None else stack.enter_context(Session(tier=chosen))
        caps_a = _run(s, side_a, sent, chosen)
        caps_b = _run(s, side_b, sent, chosen)
        keyed_by, differs = _differs(side_a, side_b, caps_a, caps_b, chosen)
        diff = Diff(side_a.label, side_b.label, chosen, caps_a, caps_b, differs, keyed_by, (side_a.kind, side_b.kind))
    MADE.append(diff)
    return diff


def _run(s: Session, side: Side, traffic: Traffic, tier: str) -> list[Capture]:
    """Every part of ``traffic`` through one side, each packet's record kept."""
    with s.dut(**side.dut_args(), tier=tier, fates=tier == "live", label="pktassert compare") as dut:
        return [dut.inject(**part.inject_args(), keep=max(1, len(part))) for part in traffic]


def unit_key(cap: Capture, same: bool) -> np.ndarray:
    """What the unit tier compares a packet by: its verdict, or across kinds what the verdict does (passed
    on, dropped, sent on)."""
    v = cap.actions.from_column(cap.records["verdict"])
    return v if same else STAGE[cap.actions](v)


def _differs(a: Side, b: Side, caps_a: list[Capture], caps_b: list[Capture], tier: str) -> tuple[str, list[np.ndarray]]:
    same = a.kind == b.kind
    out = []
    for ca, cb in zip(caps_a, caps_b):
        if tier == "unit":
            ka, kb = unit_key(ca, same), unit_key(cb, same)
        else:
            va = ca.actions.from_column(ca.records["verdict"])
            vb = cb.actions.from_column(cb.records["verdict"])
            if ca.fate_codes is None or cb.fate_codes is None:
                raise PktassertError("compare(): the live tier gave no fates for these packets, so they cannot be "
                                     "compared by what became of them. Fix: tier=\"unit\".")
            alike = _SAME if same else _SAME_DROP
            fa, fb = alike[ca.fate_codes.astype(np.int64)], alike[cb.fate_codes.astype(np.int64)]
            ka, kb = (va.astype(np.int64) * 64 + fa, vb.astype(np.int64) * 64 + fb) if same else (fa, fb)
        out.append(np.asarray(ka != kb))
    if tier == "unit":
        return ("verdict" if same else "what the verdict does (passed on, dropped, sent on)"), out
    return ("verdict and fate" if same else "fate (a filter's drop and a rule's drop alike)"), out
