"""Failure messages for asserts on captures: what was expected, what happened, the first offender."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from pktassert.observers import drop_reasons
from pktassert.observers.fate import CODES
from pktassert.results import offender, packet_diff
from pktassert.results.capture import Count, Outcome

_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def explain(op: str, left: Any, right: Any) -> list[str] | None:
    if op == "==":
        frames = packet_diff.explain(left, right)
        if frames is not None:
            return frames
    if isinstance(right, (Count, Outcome)) and not isinstance(left, (Count, Outcome)):
        left, right, op = right, left, _MIRROR.get(op, op)
    if isinstance(left, Count) and isinstance(right, int) and op in _OPS:
        return _explain_count(op, left, int(right))
    if isinstance(left, Outcome) and op in ("==", "!="):
        return _explain_outcome(op, left, right)
    return None


def _explain_fate_count(op: str, got: Count, want: int) -> list[str]:
    cap, fate = got.capture, got.fate
    assert fate is not None and cap.fate_codes is not None  # got counted them
    lines = [f"expected count(Fate.{fate.name}) {op} {want}, got {int(got)}",
             *([cap.selection] if cap.selection else []),
             f"fates of these {cap.sent if cap._fate_exact is not None else len(cap)} packets: "
             f"{', '.join(f'{f.name}={n}' for f, n in cap.fates().items()) or 'none'}"]
    reasons = cap.reasons()
    if reasons:
        lines.append(f"the kernel's drop reasons: {', '.join(f'{r}={n}' for r, n in reasons.items())}")
        lines += reason_lines(reasons)
    wants_more = _wants_more(op, got, want)
    offenders = _name_offenders(cap, (cap.fate_codes != CODES[fate]) == wants_more)
    if len(offenders):
        p = cap[int(offenders[0])]
        detail = p.detail()
        lines.append(f"first packet that {'was not' if wants_more else 'was'} {fate.name}: {cap.summary(p.pos)} -> "
                     f"{p.fate.name}{f' ({detail})' if detail else ''}")
    return lines


MOST_REASONS = 5  # explained in a message, the most frequent first: a message stays short


def reason_lines(reasons: dict[str, int]) -> list[str]:
    """One indented line per drop reason: what it means and, for the common ones, cause and fix.
    No line for a reason the running kernel lacks (explain() gives back only its name)."""
    said = [drop_reasons.explain(r) for r in list(reasons)[:MOST_REASONS]]
    return [f"  {line}" for line, r in zip(said, reasons) if line != r]


def _wants_more(op: str, got: int, want: int) -> bool:
    """Whether the assertion wanted more packets counted than there were (so the offenders are the others)."""
    return op in (">", ">=") or (op == "==" and got < want)


def _name_offenders(cap: Any, mask: np.ndarray) -> np.ndarray:
    """Positions of the offending packets; their send numbers kept on the capture inject() returned."""
    positions = np.flatnonzero(mask)
    cap.root.offenders = cap.index[positions]
    return positions


def _explain_count(op: str, got: Count, want: int) -> list[str]:
    if got.fate is not None:
        return _explain_fate_count(op, got, want)
    cap, v = got.capture, got.verdict
    what = f"count({v.name})" if v is not None else "count()"
    lines = [f"expected {what} {op} {want}, got {int(got)}",
             *([f"counted in a sample: records were kept for 1 packet in {cap.step} of {cap.sent} "
                f"(pass inject(..., keep=N) to keep more)"] if cap.sampled else []),
             *([cap.selection] if cap.selection else []),
             f"verdicts of these {len(cap)} packets: {cap.counts_text()}",
             *([f"{cap.stray} frames not sent by pktassert were judged meanwhile (not counted)"] if cap.stray else [])]
    if v is None:
        return lines
    wants_more = _wants_more(op, got, want)
    verdicts = cap.actions.from_column(cap.records["verdict"])
    offenders = _name_offenders(cap, (verdicts != int(v)) == wants_more)
    if len(offenders):
        pos = int(offenders[0])
        label = f"first packet that {'was not' if wants_more else 'was'} {v.name}"
        lines.append(f"{label}: {cap.summary(pos)} -> {cap.actions.name_of(int(cap.records['ret'][pos]))}")
        edge = offender.change(cap, pos)
        if edge:
            lines.append(edge)
        lines += offender.lines(cap, pos)
    return lines


def _explain_outcome(op: str, got: Outcome, want: Any) -> list[str]:
    acts = got.capture.actions
    want_name = acts.name_of(int(want)) if isinstance(want, (int, Outcome)) else repr(want)
    return [f"expected verdict {'' if op == '==' else 'not '}{want_name}, got {acts.name_of(got.ret)}",
            f"for {got.capture.summary(got.pos)}"]
