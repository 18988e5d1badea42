"""Failure messages for asserts on captures: what was expected, what happened, the first offender."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from pktassert import offender, packet_diff
from pktassert.capture import Count, Outcome
from pktassert.errors import PktassertError
from pktassert.fate import CODES

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
    assert fate is not None
    lines = [f"expected count(Fate.{fate.name}) {op} {want}, got {int(got)}",
             f"fates of these {cap.sent if cap.step > 1 else len(cap)} packets: "
             f"{', '.join(f'{f.name}={n}' for f, n in cap.fates().items()) or 'none'}"]
    reasons = cap.reasons()
    if reasons:
        lines.append(f"the kernel's drop reasons: {', '.join(f'{r}={n}' for r, n in reasons.items())}")
    wants_more = op in (">", ">=") or (op == "==" and int(got) < want)
    code = CODES[fate]
    codes: Any = cap.fate_codes if cap.fate_codes is not None else []
    pos = next((i for i, c in enumerate(codes) if (c != code) == wants_more), None)
    if len(codes):
        cap.offenders = np.flatnonzero((np.asarray(codes) != code) == wants_more)
    if pos is not None:
        p = cap[pos]
        said = [f"reason {p.reason}" if p.reason else "", f"rule '{p.rule}' in {p.chain}" if _rule_known(p) else "",
                f"answered {p.answer}" if p.answer else ""]
        detail = "; ".join(x for x in said if x)
        lines.append(f"first packet that {'was not' if wants_more else 'was'} {fate.name}: {cap.summary(pos)} -> "
                     f"{p.fate.name}{f' ({detail})' if detail else ''}")
    return lines


def _rule_known(p: Outcome) -> bool:
    try:
        return p.rule is not None
    except PktassertError:
        return False


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
    wants_more = op in (">", ">=") or (op == "==" and int(got) < want)
    if wants_more:
        pos = cap.first(lambda verdicts: verdicts != int(v))
        label = f"first packet that was not {v.name}"
    else:
        pos = cap.first(lambda verdicts: verdicts == int(v))
        label = f"first packet that was {v.name}"
    if pos is not None:
        lines.append(f"{label}: {cap.summary(pos)} -> {cap.actions.name_of(int(cap.records['ret'][pos]))}")
        edge = offender.change(cap, pos)
        if edge:
            lines.append(edge)
        lines += offender.lines(cap, pos)
        cap.offenders = _offenders(cap, int(v), wants_more)
    return lines


def _offenders(cap: Any, verdict: int, wants_more: bool) -> Any:
    verdicts = cap.actions.from_column(cap.records["verdict"])
    return np.flatnonzero(verdicts != verdict if wants_more else verdicts == verdict)


def _explain_outcome(op: str, got: Outcome, want: Any) -> list[str]:
    acts = got.capture.actions
    want_name = acts.name_of(int(want)) if isinstance(want, (int, Outcome)) else repr(want)
    return [f"expected verdict {'' if op == '==' else 'not '}{want_name}, got {acts.name_of(got.ret)}",
            f"for {got.capture.summary(got.pos)}"]
