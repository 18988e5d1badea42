"""What became of each packet through the DUT's whole stack: the Fate names, the kernel's drop
reasons by name (from the running kernel's BTF: their numbers differ between kernels), and the
table that turns a filter's verdict and the fate tracker's record (bpf/fate.h) into one Fate."""

from __future__ import annotations

import enum
import functools
from typing import Any

import numpy as np

from pktassert.hooks.verdict import TcVerdict, Verdict
from pktassert.instruments.record import const
from pktassert.kernel import btf_types


class Fate(enum.Enum):
    """Where a packet ended. Live tier only: the unit tier has no stack behind the filter."""

    FILTER_DROPPED = "the filter under test dropped it (XDP or tc verdict)"
    FILTER_SENT = "the filter sent it on (XDP_TX, XDP_REDIRECT, TC_ACT_REDIRECT)"
    NETFILTER_DROPPED = "netfilter dropped it (an nftables or iptables rule, or a chain's policy)"
    DROPPED = "the stack dropped it; its reason says why (NO_SOCKET, TCP_CSUM, IP_INHDR, ...)"
    ANSWERED = "the stack answered it (a TCP reset or an ICMP error) and no socket took it"
    DELIVERED = "a test socket (dut.listen) took it"
    SENT = "it left the DUT on its veth: sent on the wire (what the DUT sends, inject.from_dut)"
    CONSUMED = "the stack took it without a drop, no test socket involved (e.g. an ICMP echo answered)"
    UNKNOWN = "not seen to end: still held in the stack when pktassert looked, or not trackable"

    def __repr__(self) -> str:
        return f"Fate.{self.name}"


# drop reasons that name the stage that dropped (the rest are the stack's own)
STAGE_OF_REASON = {"NETFILTER_DROP": Fate.NETFILTER_DROPPED, "TC_INGRESS": Fate.FILTER_DROPPED,
                   "TC_EGRESS": Fate.FILTER_DROPPED, "XDP": Fate.FILTER_DROPPED}

def _stage(table: dict[Any, int]) -> Any:
    lookup = np.zeros(max(int(a) for a in table) + 2, np.uint8)
    for action, where in table.items():
        lookup[int(action) + 1] = where  # + 1: TC_ACT_UNSPEC is -1
    return lambda actions: lookup[np.clip(actions.astype(np.int64) + 1, 0, len(lookup) - 1)]


# What the first stage's action means for the rest of the way: 0 on into the stack, 1 dropped, 2 sent on.
STAGE = {Verdict: _stage({Verdict.ABORTED: 1, Verdict.DROP: 1, Verdict.PASS: 0, Verdict.TX: 2, Verdict.REDIRECT: 2}),
         TcVerdict: _stage({TcVerdict.UNSPEC: 0, TcVerdict.OK: 0, TcVerdict.RECLASSIFY: 0, TcVerdict.SHOT: 1,
                            TcVerdict.PIPE: 0, TcVerdict.STOLEN: 0, TcVerdict.QUEUED: 0, TcVerdict.REPEAT: 0,
                            TcVerdict.REDIRECT: 2, TcVerdict.TRAP: 0})}
CODES = {fate: i for i, fate in enumerate(Fate)}
BY_CODE = list(Fate)


@functools.cache
def reason_names() -> dict[int, str]:
    """``enum skb_drop_reason`` of the running kernel, value -> name without SKB_DROP_REASON_."""
    return {v: n.removeprefix("SKB_DROP_REASON_") for v, n in btf_types.kernel().enum("skb_drop_reason").items()}


def reason_value(name: str) -> int | None:
    return next((v for v, n in reason_names().items() if n == name), None)


ANSWER_UNKNOWN = "unknown"


def answer_of(record: Any) -> str | None:
    """How the stack answered the packet of one fate tracker record: "RST", "ICMP 3/3" (type/code,
    of ICMP or ICMPv6: the packet's own IP version), None when it sent no answer, or ANSWER_UNKNOWN
    when an answer left while the packet was freed and pktassert could not read its headers to
    tell whether that answer was its (bpf/fate.h, F_ANSWER_UNKNOWN): never None as if unanswered."""
    flags = int(record["flags"])
    if flags & const("F_RESET"):
        return "RST"
    if flags & const("F_ICMP"):
        return f"ICMP {int(record['answer']) >> 8}/{int(record['answer']) & 0xFF}"
    if flags & const("F_ANSWER_UNKNOWN"):
        return ANSWER_UNKNOWN
    return None


def fates(stage: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Fate codes (CODES) per packet from ``stage`` (per packet: 0 the filters passed it, 1 a filter
    dropped it, 2 a filter sent it on) and the tracker's ``records`` for the same packets."""
    flags, reason = records["flags"], records["reason"]
    out = np.full(len(flags), CODES[Fate.UNKNOWN], np.uint8)
    dropped = (flags & const("F_DROPPED")) != 0
    answered = (flags & (const("F_RESET") | const("F_ICMP"))) != 0
    delivered = (flags & const("F_DELIVERED")) != 0
    consumed = (flags & const("F_CONSUMED")) != 0
    sent = (flags & const("F_SENT")) != 0
    # In order of precedence, least first: a later line overrides an earlier one.
    out[consumed] = CODES[Fate.CONSUMED]
    out[sent] = CODES[Fate.SENT]
    out[answered] = CODES[Fate.ANSWERED]
    out[delivered] = CODES[Fate.DELIVERED]
    out[dropped & answered & ~delivered] = CODES[Fate.ANSWERED]
    out[dropped & ~answered] = CODES[Fate.DROPPED]
    out[dropped & delivered] = CODES[Fate.DROPPED]  # taken in, then dropped at the socket (a full queue)
    for name, fate in STAGE_OF_REASON.items():
        value = reason_value(name)
        if value is not None:
            out[dropped & (reason == value)] = CODES[fate]
    out[stage == 1] = CODES[Fate.FILTER_DROPPED]
    out[stage == 2] = CODES[Fate.FILTER_SENT]
    return out
