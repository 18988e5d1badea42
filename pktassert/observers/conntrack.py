"""Each packet's connection as netfilter's conntrack had it when the rule set judged it, and what NAT
rewrote: read from the fate tracker's record (bpf/fate.h: ct_info, ct_status, the mid and end
header snapshots its netfilter programs took)."""

from __future__ import annotations

import enum
import ipaddress
from typing import Any

import numpy as np

from pktassert.instruments.record import const


class Ct(enum.Enum):
    """nftables' ``ct state`` of a packet (live tier, a DUT with a rule set)."""

    NEW = "the first packet of a connection conntrack has not seen answered"
    ESTABLISHED = "a packet of a connection seen both ways (or its reply)"
    RELATED = "a packet related to a known connection (an ICMP error about it, an expected connection)"
    INVALID = "conntrack ran and gave it no connection (nftables' ct state invalid)"
    UNTRACKED = "a rule exempted it from conntrack (notrack)"
    NONE = "conntrack never saw it: a filter dropped it first, or no conntrack runs in the DUT's namespace"

    def __repr__(self) -> str:
        return f"Ct.{self.name}"


# ct_info (enum ip_conntrack_info + 1; bpf/fate.h) -> (state, reply direction)
_INFO: dict[int, tuple[Ct, bool]] = {1: (Ct.ESTABLISHED, False), 2: (Ct.RELATED, False), 3: (Ct.NEW, False),
                                     4: (Ct.ESTABLISHED, True), 5: (Ct.RELATED, True), 8: (Ct.UNTRACKED, False)}
CODES = {ct: i for i, ct in enumerate(Ct)}
BY_CODE = list(Ct)
_CODE_OF_INFO = np.full(16, CODES[Ct.NONE], np.uint8)
for _info, (_ct, _) in _INFO.items():
    _CODE_OF_INFO[_info] = CODES[_ct]

# enum ip_conntrack_status (uapi/linux/netfilter/nf_conntrack_common.h): bit -> the name we give it
STATUS_BITS = {0: "expected", 1: "seen_reply", 2: "assured", 3: "confirmed", 4: "src_nat", 5: "dst_nat",
               9: "dying", 11: "template", 13: "helper", 14: "offload", 15: "hw_offload"}


def ct_codes(records: np.ndarray, active: bool) -> np.ndarray:
    """Ct codes (CODES) per record. ``active``: conntrack ran in the DUT's namespace during the call
    (a packet had a connection, or conntrack counted invalid packets): only then is a packet with
    no connection INVALID rather than NONE."""
    info = records["ct_info"].astype(np.intp) & 15
    out = _CODE_OF_INFO[info]
    if active:
        out[info == const("CT_NONE")] = CODES[Ct.INVALID]
    return out


def reply(record: Any) -> bool:
    return _INFO.get(int(record["ct_info"]), (Ct.NONE, False))[1]


def status(record: Any) -> frozenset[str]:
    """The connection's status bits as the rule set left it (at pktassert's last hook, NAT's bits set;
    where the packet never got there, just after conntrack), and ``confirm_failed`` when conntrack could
    not confirm a new connection after the rule set accepted it (it then drops the packet)."""
    passed = int(record["flags"]) & const("F_NF_END")
    bits = int(record["ct_status_end"] if passed else record["ct_status"])
    names = {name for bit, name in STATUS_BITS.items() if bits >> bit & 1}
    if (int(record["flags"]) & const("F_NF_END") and int(record["flags"]) & const("F_DROPPED")
            and not int(record["ct_status_end"]) >> 3 & 1 and int(record["ct_info"]) == 3):
        names.add("confirm_failed")  # dropped after pktassert's last hook: only conntrack's confirm is later
    return frozenset(names)


HOOK_NAMES = {1: "prerouting", 2: "input", 3: "forward", 4: "output", 5: "postrouting"}  # enum nf_inet_hooks + 1
# Where destination NAT happens for a snapshot taken after it, and where source NAT does.
_DNAT_AT = {2: "prerouting", 3: "prerouting", 5: "output"}
_SNAT_AT = {2: "input", 5: "postrouting"}


def _addr(raw: Any, version: int) -> str:
    b = bytes(raw)
    return str(ipaddress.IPv4Address(b[:4]) if version == 4 else ipaddress.IPv6Address(b[:16]))


def rewrites(record: Any, sent: tuple[str, str, int | None, int | None], l4: str | None) -> tuple[str, ...]:
    """What NAT changed: ("IP.dst: 192.0.2.1 -> 198.51.100.7 at nat prerouting", ...), comparing the
    packet as sent (``sent``: src, dst, sport, dport) with the stack's snapshots of it."""
    version = int(record["version"])
    if version not in (4, 6) or not int(record["mid_hook"]):
        return ()
    ip = "IP" if version == 4 else "IPv6"
    out: list[str] = []
    before = sent
    for snap, hook_field, at in (("mid", "mid_hook", _DNAT_AT), ("end", "end_hook", _SNAT_AT)):
        hook = int(record[hook_field])
        if not hook:
            continue
        t = record[snap]
        now = (_addr(t["saddr"], version), _addr(t["daddr"], version),
               int(t["sport"]) if before[2] is not None else None, int(t["dport"]) if before[3] is not None else None)
        where = at.get(hook, HOOK_NAMES.get(hook, "?"))
        for i, field in enumerate((f"{ip}.src", f"{ip}.dst", f"{l4}.sport", f"{l4}.dport")):
            if before[i] is not None and now[i] is not None and before[i] != now[i]:
                out.append(f"{field}: {before[i]} -> {now[i]} at nat {where}")
        before = now
    return tuple(out)
