"""Fates of one inject() call, read from the fate tracker's slots chunk by chunk as the records
are: every packet's fate and drop reason counted (exact, also for sampled floods), the sampled
packets' tracker records kept for the Capture."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pktassert.frames.wire import sampled
from pktassert.instruments.fate_tracker import FateTracker
from pktassert.instruments.record import const
from pktassert.observers.fate import BY_CODE, CODES, STAGE, Fate, fates, reason_names
from pktassert.observers.nft_trace import rule_keys, unique_rows

QUIET_S = 0.1  # stop waiting for the stack once no packet's fate changed for this long


class FateReader:
    def __init__(self, tracker: FateTracker, n: int, step: int) -> None:
        self.tracker, self.step = tracker, step
        self.records = np.zeros(-(-n // step), tracker.dtype)  # the sampled packets'
        self.codes = np.full(len(self.records), CODES[Fate.UNKNOWN], np.uint8)
        self.exact = np.zeros(len(Fate), np.int64)
        self.reasons: dict[int, int] = {}
        self.ct_infos = np.zeros(16, np.int64)  # every packet's ct_info (bpf/fate.h), counted
        self.rules: dict[tuple[int, int], int] = {}  # every decided packet's rule (nft_trace.rule_keys), counted

    def take(self, tags: np.ndarray, stages: Sequence[tuple[Any, np.ndarray, np.ndarray]], start: int) -> None:
        """The fates of the packets at ``start``.. with these tags, given each filter stage's verdicts in
        order as (actions, verdict column, which packets reached that stage)."""
        stage = np.zeros(len(tags), np.uint8)
        for actions, verdicts, reached in stages:  # a later stage decides for the packets that reached it
            stage[reached] = STAGE[actions](actions.from_column(verdicts))[reached]
        recs = self._settled(tags, stage == 0)
        codes = fates(stage, recs)
        self.exact += np.bincount(codes, minlength=len(Fate))
        dropped = (recs["flags"] & const("F_DROPPED")) != 0
        values, counts = np.unique(recs["reason"][dropped], return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            self.reasons[v] = self.reasons.get(v, 0) + c
        self.ct_infos += np.bincount(recs["ct_info"] & 15, minlength=16)
        decided = recs[recs["rule_kind"] != 0]
        if len(decided):
            keys, _, counts = unique_rows(rule_keys(decided))
            for k, c in zip(map(tuple, keys.tolist()), counts.tolist()):
                self.rules[k] = self.rules.get(k, 0) + c
        into, rows = sampled(start, start + len(tags), self.step)
        self.records[into] = recs[rows]
        self.codes[into] = codes[rows]

    def _settled(self, tags: np.ndarray, passed: np.ndarray) -> np.ndarray:
        """The tracker's records for ``tags`` once every packet the filters passed has ended (dropped,
        consumed, or taken by a socket), or nothing changed for QUIET_S; others' records zeroed."""
        final = const("F_DROPPED") | const("F_CONSUMED") | const("F_DELIVERED") | const("F_SENT")
        slots = tags % const("SLOTS")
        before, moved = -1, time.monotonic()
        while True:
            recs = self.tracker.slots[slots]
            ours = recs["tag"] == tags
            open_ = int((passed & ~(ours & ((recs["flags"] & final) != 0))).sum())
            if open_ != before:
                before, moved = open_, time.monotonic()
            if open_ == 0 or time.monotonic() - moved > QUIET_S:
                recs[~ours] = 0
                return recs
            time.sleep(0.0005)  # the slots are a map: nothing to block on; a short, bounded poll

    def reason_counts(self) -> dict[str, int]:
        names = reason_names()
        return {names.get(v, str(v)): c for v, c in sorted(self.reasons.items(), key=lambda kv: -kv[1])}

    def fate_counts(self) -> dict[Fate, int]:
        return {BY_CODE[i]: int(c) for i, c in enumerate(self.exact) if c}
