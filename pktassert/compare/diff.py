"""What a comparison found: one row per class of difference, as Batfish's compareFilters shows them (the
fields that define it, a representative packet, each side's answer, how many packets), from the kernel's
own verdicts and fates for the very same packets."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scapy.layers.l2 import Ether

from pktassert.reports import evidence
from pktassert.results.capture import Capture

# Record columns that can define a class, in the order a person reads them; ports and ICMP only
# where the class's packets carry them.
DEFINING = ("ethertype", "vlan_outer", "vlan_inner", "proto", "src", "dst", "sport", "dport", "tcp_flags", "icmp_type",
            "icmp_code", "len")
PORTS = {6, 17, 132}    # TCP, UDP, SCTP
ICMPS = {1, 58}         # ICMP, ICMPv6


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one side did with a packet: its verdict, and in the live tier its fate and deciding rule."""

    verdict: str
    fate: str | None = None
    rule: str | None = None

    def __str__(self) -> str:
        return " / ".join(x for x in (self.verdict, self.fate, self.rule) if x)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DiffClass:
    """Packets that A and B answer differently, the same way: A's answer, B's, and what they share."""

    count: int
    fields: dict[str, str]  # what defines the class: a value, or lo..hi, every packet of it has
    number: int             # the representative packet's send position
    packet: bytes
    a: Answer
    b: Answer

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "fields": self.fields, "packet_number": self.number,
                "packet": Ether(self.packet).summary(), "packet_hex": self.packet.hex(),
                "a": self.a.to_json(), "b": self.b.to_json()}


def answer(cap: Capture, pos: int, kind: str = "xdp") -> Answer:
    """A side's answer for the packet at ``pos`` of its capture (``kind``: "xdp", "tc" or "nftables": a rule
    set's packets pass pktassert's own XDP stage, whose verdict is not the rule set's answer)."""
    out = cap[pos]
    fate = out.fate.name if cap.fate_codes is not None else None
    rule = out.rule if cap.fate_rules is not None else None
    return Answer("" if kind == "nftables" else cap.actions.name_of(out.ret), fate, rule)


def _addresses(column: np.ndarray, l3: int) -> str | None:
    """One address, a whole prefix (203.0.113.0/26) or a whole range (a..b) that these addresses fill; else None."""
    raw = np.unique(column[:, :4] if l3 == 4 else column, axis=0)
    values = sorted(int.from_bytes(bytes(r), "big") for r in raw)
    lo, hi = values[0], values[-1]
    make = ipaddress.IPv4Address if l3 == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(make(lo))
    if hi - lo + 1 != len(values):
        return None
    nets = list(ipaddress.summarize_address_range(make(lo), make(hi)))
    return str(nets[0]) if len(nets) == 1 else f"{make(lo)}..{make(hi)}"


def same_everywhere(records: np.ndarray) -> set[str]:
    """The fields all the traffic shares: they tell no class of packets from another."""
    return {name for name in DEFINING if len(records) == 0 or bool((records[name] == records[name][0]).all())}


def defining(records: np.ndarray, shared: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """The fields every one of these packets shares (one value, or a whole range lo..hi), but for those
    ``shared`` by all the traffic."""
    out: dict[str, str] = {}
    protos = set(np.unique(records["proto"]).tolist())
    l3s = np.unique(records["l3"]).tolist()
    for name in DEFINING:
        if name in shared:
            continue
        if name in ("sport", "dport", "tcp_flags") and not protos <= (PORTS if name != "tcp_flags" else {6}):
            continue
        if name in ("icmp_type", "icmp_code") and not protos <= ICMPS:
            continue
        if name in ("src", "dst", "proto") and (len(l3s) != 1 or l3s[0] not in (4, 6)):
            continue
        column = records[name]
        if name in ("src", "dst"):
            said = _addresses(column, int(l3s[0]))
            if said:
                out[name] = said
            continue
        values = np.unique(column)
        if len(values) == 1:
            out[name] = str(int(values[0]))
        elif int(values[-1]) - int(values[0]) + 1 == len(values) and name != "len":
            out[name] = f"{int(values[0])}..{int(values[-1])}"
    return out


class Diff:
    """Where two subjects answered the same packets differently. ``bool(diff)``: any difference;
    ``len(diff)``: how many packets; iterating gives the classes; ``str(diff)`` is the table."""

    def __init__(self, a_label: str, b_label: str, tier: str, a: list[Capture], b: list[Capture],
                 differs: list[np.ndarray], keyed_by: str, kinds: tuple[str, str] = ("xdp", "xdp")) -> None:
        self.a_label, self.b_label, self.tier, self.keyed_by, self.kinds = a_label, b_label, tier, keyed_by, kinds
        self.a_captures, self.b_captures, self._differs = a, b, differs
        self.sent = sum(c.sent for c in a)
        self.classes = self._classes()

    def _positions(self) -> Iterator[tuple[int, Capture, Capture, np.ndarray]]:
        """Per traffic part: its first send number overall, A's and B's captures, the differing positions."""
        first = 0
        for ca, cb, d in zip(self.a_captures, self.b_captures, self._differs):
            yield first, ca, cb, np.flatnonzero(d)
            first += ca.sent

    def _classes(self) -> list[DiffClass]:
        groups: dict[tuple[Answer, Answer], list[tuple[int, Capture, np.ndarray]]] = {}
        for first, ca, cb, where in self._positions():
            if not len(where):
                continue
            # Packets with the same (A verdict, A fate, B verdict, B fate) share their answers; with a rule set
            # (live) the deciding rule is read packet by packet (rules are objects, not a column numpy groups).
            keys = _pair_keys(ca, cb, where)
            by_rule = ca.fate_rules is not None or cb.fate_rules is not None
            for key in np.unique(keys):
                at = where[keys == key]
                for one in ([np.array([p]) for p in at.tolist()] if by_rule else [at]):
                    pair = (answer(ca, int(one[0]), self.kinds[0]), answer(cb, int(one[0]), self.kinds[1]))
                    groups.setdefault(pair, []).append((first, ca, one))
        out = []
        shared = same_everywhere(np.concatenate([ca.records for ca in self.a_captures])) if groups else set()
        for (a, b), parts in groups.items():
            records = np.concatenate([ca.records[at] for _, ca, at in parts])
            first, ca, at = parts[0]
            pos = int(at[0])
            out.append(DiffClass(len(records), defining(records, shared), first + int(ca.index[pos]), ca.frame(pos), a, b))
        return sorted(out, key=lambda c: (-c.count, c.number))

    def __bool__(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return sum(c.count for c in self.classes)

    def __iter__(self) -> Iterator[DiffClass]:
        return iter(self.classes)

    def differing(self) -> list[Capture]:
        """A's captures cut to the packets that differ (one per traffic part): where(), fields, frames."""
        return [ca._subset(d) for ca, d in zip(self.a_captures, self._differs)]

    def only(self, *layers: Any, **fields: Any) -> bool:
        """Whether there are differences, and every one is a packet that ``where(*layers, **fields)`` selects.
        No difference at all is False: a change that was meant to change something changed nothing."""
        if not self:
            return False
        return all(len(sub.where(*layers, **fields)) == len(sub) for sub in self.differing())

    def packets(self) -> list[Ether]:
        """The differing packets, in send order."""
        return [Ether(sub.frame(i)) for sub in self.differing() for i in range(len(sub))]

    def write_pcapng(self, path: str | os.PathLike[str]) -> int:
        """The differing packets, each with A's and B's answer in its comment; how many were written."""
        def rows() -> Iterator[tuple[bytes, str]]:
            for first, ca, cb, where in self._positions():
                for p in where.tolist():
                    yield ca.frame(p), (f"pktassert compare: packet #{first + int(ca.index[p])}: A ({self.a_label}): "
                                        f"{answer(ca, p, self.kinds[0])}; B ({self.b_label}): "
                                        f"{answer(cb, p, self.kinds[1])}")
        return evidence.write_frames(Path(path), rows())

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a_label, "b": self.b_label, "tier": self.tier, "compared_by": self.keyed_by,
                "packets": self.sent, "differing": len(self), "classes": [c.to_json() for c in self.classes]}

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def __str__(self) -> str:
        head = (f"{len(self):,} of {self.sent:,} packets differ between A ({self.a_label}) and B ({self.b_label}), "
                f"{self.tier} tier, compared by {self.keyed_by}")
        if not self:
            return f"no difference: {self.sent:,} packets answered alike by A ({self.a_label}) and B ({self.b_label}), " \
                   f"{self.tier} tier, compared by {self.keyed_by}"
        rows = [("#", "packets", "defined by", "example", "A", "B")]
        for i, c in enumerate(self.classes, 1):
            rows.append((str(i), f"{c.count:,}", " ".join(f"{k}={v}" for k, v in c.fields.items()) or "-",
                         f"#{c.number}: {Ether(c.packet).summary()}", str(c.a), str(c.b)))
        widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(rows[0]))]
        lines = ["  ".join(cell[:w].ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join([f"{head}, in {len(self.classes)} class{'es' if len(self.classes) != 1 else ''}:", *lines])

    def __repr__(self) -> str:
        # One line (pytest cuts an assert message's repr at 240 characters): the biggest classes first.
        said = "; ".join(f"{' '.join(f'{k}={v}' for k, v in c.fields.items()) or 'packets'}: {_short(c)}"
                         f"{f' x{c.count:,}' if c.count > 1 else ''}" for c in self.classes[:3])
        more = f"; {len(self.classes) - 3} more classes" if len(self.classes) > 3 else ""
        return f"<Diff: {len(self):,} of {self.sent:,} packets differ{': ' + said if said else ''}{more}>"


def _short(c: DiffClass) -> str:
    """A's and B's answer in a word each: the verdicts, or the fates where the verdicts agree."""
    if c.a.verdict != c.b.verdict or not (c.a.fate or c.b.fate):
        return f"{c.a.verdict}->{c.b.verdict}"
    return f"{c.a.fate}->{c.b.fate}"


def _pair_keys(ca: Capture, cb: Capture, where: np.ndarray) -> np.ndarray:
    """One integer per differing packet for its (A verdict, A fate, B verdict, B fate)."""
    def side(c: Capture) -> np.ndarray:
        v = c.actions.from_column(c.records["verdict"][where]).astype(np.int64) + 1  # tc's UNSPEC is -1
        f = c.fate_codes[where].astype(np.int64) if c.fate_codes is not None else np.zeros(len(where), np.int64)
        return v * 64 + f
    return side(ca) * 1_000_000 + side(cb)
