"""A Capture's two halves: per-packet columns, aligned (row i of each is the same packet), and the facts
of the whole inject() call, shared by every subset (where(), a slice) of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from pktassert.frames.flood import Flood
from pktassert.hooks.verdict import Actions, Verdict
from pktassert.observers.fate_reader import FateReader
from pktassert.observers.live_outputs import LiveOutputs
from pktassert.observers.outputs import Outputs


@dataclasses.dataclass(frozen=True)
class Columns:
    """A Capture's per-packet columns, aligned: row i of each is the same packet. A subset masks them alike."""

    records: np.ndarray                     # struct pktassert_record per packet (bpf/record.h)
    index: np.ndarray                       # each packet's position in the send order
    fate_codes: np.ndarray | None = None    # live tier with the dut fixture: observers/fate.py
    fate_records: np.ndarray | None = None
    fate_rules: np.ndarray | None = None    # with a rule set: (chain, rule, accepted) that decided, or None

    def subset(self, mask: np.ndarray) -> Columns:
        cut: dict[str, Any] = {f.name: None if (v := getattr(self, f.name)) is None else v[mask]
                               for f in dataclasses.fields(self)}  # every column, whichever are added later
        return Columns(**cut)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What holds for a whole inject() call, whichever of its packets a Capture holds."""

    frame: Callable[[int], bytes]  # a packet's frame as sent, by send position
    sent: int
    accounted: int                 # frames with a verdict of their own
    tier: str = "live"
    step: int = 1                  # > 1: records kept for every step-th packet only (a large flood)
    exact: np.ndarray | None = None  # then the whole flood's verdict counts, from every packet's record
    stray: int = 0                 # frames pktassert did not send that the filter judged meanwhile (not counted)
    actions: type[Actions] = Verdict  # the hook's verdicts: Verdict (XDP), TcVerdict (tc)
    hook: str = "xdp"              # the stage these records are of
    outputs: Outputs | LiveOutputs | None = None
    fate_exact: FateReader | None = None
    rules_unknown: str | None = None  # why there are no fate_rules though there is a rule set
    conntrack: dict[str, int] = dataclasses.field(default_factory=dict)  # what conntrack counted (drop, ...)
    ct_active: bool = False        # conntrack ran in the DUT's namespace during the call
    netfilter: bool = False        # pktassert's netfilter programs ran (connection states and NAT are known)
    rule_tally: dict[tuple[str, str, bool], int] | None = None  # every packet's deciding rule, counted
    origin: str = ""               # where the test called inject() (file:line)
    flood: Flood | None = None     # the flood the packets were built from (payloads searched in numpy)
    printed: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # a filter's print lines by packet tag
