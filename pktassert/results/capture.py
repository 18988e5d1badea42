"""What inject() returns: each injected packet's verdict and parsed fields, in send order."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

from pktassert.errors import PktassertError
from pktassert.hooks.verdict import Actions, Verdict
from pktassert.instruments.record import const
from pktassert.observers.fate import Fate
from pktassert.observers.live_outputs import LiveOutputs
from pktassert.results import payload_match
from pktassert.results.capture_fates import CaptureFates, OutcomeFate
from pktassert.results.columns import Columns, Facts

_PROTO = {TCP: 6, UDP: 17, ICMP: 1}
# scapy field name -> record column, for fields the inspector parses.
_COLUMNS = {"sport": "sport", "dport": "dport", "ttl": "ttl", "hlim": "ttl", "proto": "proto", "nh": "proto",
            "type": "icmp_type", "code": "icmp_code", "flags": "tcp_flags", "vlan": "vlan_outer", "vlan_inner": "vlan_inner",
            "ethertype": "ethertype", "len": "len", "ifindex": "ifindex", "verdict": "verdict", "ret": "ret"}


def _address(value: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(value)
    return addr.version, addr.packed.ljust(16, b"\0")


def _tcp_flags(text: str) -> int:
    letters = "FSRPAUECN"
    if not text or any(c not in letters for c in text):
        raise PktassertError(f"where(flags={text!r}): TCP flags are letters of {letters!r} as scapy writes them, "
                             f"e.g. \"S\" or \"SA\".")
    return int(TCP(flags=text).flags)


class Count(int):
    """An int that remembers which packets it counted, so a failed assert can show them."""

    capture: Capture
    verdict: Actions | None
    fate: Fate | None

    def __new__(cls, value: int, capture: Capture, verdict: Actions | None, fate: Fate | None = None) -> Count:
        self = super().__new__(cls, value)
        self.capture, self.verdict, self.fate = capture, verdict, fate
        return self


def _same_hook(actions: type[Actions], other: object) -> None:
    """Verdict.PASS is 2 and so is TcVerdict.SHOT: comparing one hook's verdict with another's is an
    error, never a silent match."""
    if isinstance(other, Actions) and not isinstance(other, actions):
        raise PktassertError(f"{type(other).__name__}.{other.name} compared with a {actions.__name__}: this packet's "
                             f"verdict is a {actions.__name__}. Fix: compare with {actions.__name__}.X.")


class Outcome(OutcomeFate):
    """One packet's verdict; compares equal to a Verdict, and shows its packet when it doesn't."""

    def __init__(self, capture: Capture, pos: int) -> None:
        self.capture, self.pos = capture, pos
        self.value = int(capture.actions.from_column(capture.records["verdict"][pos:pos + 1])[0])  # the action taken

    @property
    def ret(self) -> int:
        """The filter's return value as it returned it (ABORTED for one that is not an XDP action)."""
        return int(self.capture.records["ret"][self.pos])

    @property
    def stages(self) -> dict[str, Any]:
        """What each stage decided for this packet, by hook name; None where it never got there
        (XDP dropped, sent back or redirected it)."""
        number = self.capture.index[self.pos:self.pos + 1]
        out: dict[str, Any] = {}
        for name, cap in self.capture.stages.items():
            at = cap.positions(number)  # a stage's index is in send order
            out[name] = cap[int(at[0])].verdict_enum() if len(at) else None
        return out

    def verdict_enum(self) -> Any:
        return self.capture.actions(self.value)

    @property
    def prints(self) -> list[str]:
        """What the filter printed (bpf_printk) while it ran on this packet."""
        return self.capture.printed.get(int(self.capture.records["tag"][self.pos]), [])

    @property
    def tail_call(self) -> bool:
        """Whether the verdict came from a program the filter tail-called (unit tier)."""
        return bool(self.capture.records["note"][self.pos] & const("N_TAIL_CALL"))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Outcome):
            return self.value == other.value
        _same_hook(self.capture.actions, other)
        return isinstance(other, int) and self.value == int(other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __int__(self) -> int:
        return self.value

    @property
    def output(self) -> Ether:
        """The frame as the filter left it (unit tier), or as it arrived after leaving the DUT (live
        tier: TX'd to the peer, redirected to the honeypot)."""
        return self.capture.output_at(self.pos)

    @property
    def landed(self) -> str | None:
        """Live tier: where this packet's frame arrived after leaving the DUT ("peer", "honeypot"), or None."""
        outs = self.capture._outputs
        return outs.where(int(self.capture.index[self.pos])) if isinstance(outs, LiveOutputs) else None

    def __repr__(self) -> str:
        return f"{self.capture.actions.name_of(self.ret)} for {self.capture.summary(self.pos)}"


class Capture(CaptureFates):
    """Verdicts and parsed fields of injected packets, in send order: aligned Columns and the call's Facts,
    built once; a where() or a slice is another Capture over a subset of the columns and the same facts."""

    def __init__(self, columns: Columns, facts: Facts, later: dict[str, Capture] | None = None,
                 root: Capture | None = None) -> None:
        self.columns, self.facts = columns, facts
        # With more than one stage on the DUT (XDP, then tc): the later stages' Captures by hook name; each
        # holds only the packets that reached it.
        self._later = later or {}
        # Packet numbers (send order) a failed assertion named, kept on the capture inject() returned
        # (``root``; a where() or slice of it shares it), so that the evidence keeps them all.
        self.offenders: np.ndarray | None = None
        self.root: Capture = self if root is None else root
        self.selection = ""  # what where() chose, out of how many

    # The per-packet columns, aligned with one another (row i: the same packet in each).
    records = property(lambda self: self.columns.records)  # laid out as struct pktassert_record (bpf/record.h)
    index = property(lambda self: self.columns.index)      # each packet's position in the send order
    fate_codes = property(lambda self: self.columns.fate_codes)      # live tier, dut fixture: observers/fate.py
    fate_records = property(lambda self: self.columns.fate_records)
    fate_rules = property(lambda self: self.columns.fate_rules)      # with a rule set: (chain, rule, accepted), or None
    # What holds for the whole inject() call, shared by each subset.
    sent = property(lambda self: self.facts.sent)
    accounted = property(lambda self: self.facts.accounted)
    tier = property(lambda self: self.facts.tier)
    step = property(lambda self: self.facts.step)
    stray = property(lambda self: self.facts.stray)
    actions = property(lambda self: self.facts.actions)
    rules_unknown = property(lambda self: self.facts.rules_unknown)
    conntrack = property(lambda self: self.facts.conntrack)
    ct_active = property(lambda self: self.facts.ct_active)
    netfilter = property(lambda self: self.facts.netfilter)
    origin = property(lambda self: self.facts.origin)
    flood = property(lambda self: self.facts.flood)
    printed = property(lambda self: self.facts.printed)
    _frame = property(lambda self: self.facts.frame)
    _outputs = property(lambda self: self.facts.outputs)
    # Exact counts are of the whole call: a subset (where(), a slice) counts its own rows.
    _exact = property(lambda self: self.facts.exact if self.root is self else None)
    _fate_exact = property(lambda self: self.facts.fate_exact if self.root is self else None)

    @property
    def stages(self) -> dict[str, Capture]:
        """Each stage's Capture by hook name ("xdp", "tc") when the DUT has more than one; else empty."""
        return {self.facts.hook: self.root, **self.root._later} if self.root._later else {}

    def _subset(self, mask: np.ndarray) -> Capture:
        return Capture(self.columns.subset(mask), self.facts, root=self.root)

    def positions(self, numbers: np.ndarray) -> np.ndarray:
        """The positions here of the packets with these send numbers (those this capture holds)."""
        at = np.searchsorted(self.index, numbers)
        ok = at < len(self.index)
        at = at[ok]
        return at[self.index[at] == numbers[ok]]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Outcome]:
        return (Outcome(self, i) for i in range(len(self)))

    @overload
    def __getitem__(self, pos: int) -> Outcome: ...
    @overload
    def __getitem__(self, pos: slice) -> Capture: ...

    def __getitem__(self, pos: int | slice) -> Outcome | Capture:
        if isinstance(pos, slice):  # the packets at those positions, as a Capture
            mask = np.zeros(len(self), bool)
            mask[pos] = True
            return self._subset(mask)
        return Outcome(self, range(len(self))[pos])

    @property
    def sampled(self) -> bool:
        """Whether counts here are of a sample (a where() of a flood larger than keep=)."""
        return self.step > 1 and self._exact is None

    @property
    def verdicts(self) -> list[Actions]:
        """Every packet's verdict in send order: the action the kernel took (XDP: ABORTED where the
        filter returned a non-action; tc: UNSPEC for values a classifier's caller treats so; see ``ret``)."""
        return [self.actions(v) for v in self.actions.from_column(self.records["verdict"]).tolist()]

    @property
    def verdict(self) -> Outcome:
        """The verdict of the only packet; an error when the capture holds more than one."""
        if len(self) != 1:
            raise ValueError(f"this capture holds {len(self)} packets; .verdict is for one. "
                             f"Use .verdicts, .count(Verdict.X) or [i].")
        return Outcome(self, 0)

    def count(self, verdict: Actions | Fate | int | None = None) -> Count:
        """How many packets got ``verdict`` (all packets when None), or met a Fate. In a sampled capture
        (``step`` > 1) exact for the whole flood, from the counters; after where(), of the sample."""
        if isinstance(verdict, Fate):
            return Count(self.fate_count(verdict), self, None, verdict)
        acts = self.actions
        known = {int(v) for v in acts}
        if verdict is not None and not (isinstance(verdict, int) and int(verdict) in known
                                        and (not isinstance(verdict, Actions) or isinstance(verdict, acts))):
            raise PktassertError(f"count({verdict!r}): not a verdict of this hook. Fix: one of "
                                 f"{', '.join(f'{acts.__name__}.{v.name}' for v in acts)}, or nothing for all packets.")
        if self._exact is not None:
            n = self.sent if verdict is None else int(self._exact[acts.slot(int(verdict))])
        else:
            n = len(self) if verdict is None else int((acts.from_column(self.records["verdict"]) == int(verdict)).sum())
        return Count(n, self, None if verdict is None else acts(int(verdict)))

    def counts(self) -> dict[str, int]:
        acts = self.actions
        if self._exact is not None:
            return {acts.name_of(i + acts.first()): int(c) for i, c in enumerate(self._exact) if c}
        vals, n = np.unique(acts.from_column(self.records["verdict"]), return_counts=True)
        return {acts.name_of(int(v)): int(c) for v, c in zip(vals, n)}

    def where(self, *layers: type[Packet] | Callable[[Ether], Any], payload: bytes | None = None,
              **fields: Any) -> Capture:
        """The packets that have every layer given and whose parsed fields match.

        A field's value may be one value or a collection (range, set, list) of allowed values; ``src``
        and ``dst`` also take a prefix ("203.0.113.0/24"). TCP flags may be written as scapy writes them
        ("S", "SA"). ``payload=b"..."``: the payload (after the transport header) contains those bytes. A
        callable instead of a layer: a predicate on the packet as scapy dissects it (one scapy object per
        packet: slower).
        """
        r = self.records
        mask = np.ones(len(r), bool)
        classes = [x for x in layers if isinstance(x, type) and issubclass(x, Packet)]
        for layer in layers:
            if isinstance(layer, type) and issubclass(layer, Packet):
                mask &= self._has(layer)
            elif callable(layer):
                mask &= payload_match.satisfying(layer, len(r), self.frame)
            else:
                raise PktassertError(f"where({layer!r}): give scapy layers (TCP, IPv6), a predicate on the packet, "
                                     f"and fields by name (dport=22, payload=b'...').")
        if payload is not None:
            if not isinstance(payload, (bytes, bytearray)):
                raise PktassertError(f"where(payload={payload!r}): give the bytes to look for, e.g. payload=b'/etc/passwd'.")
            mask &= payload_match.contains(bytes(payload), self.index, self.flood, self.frame)
        for name, want in fields.items():
            mask &= self.ct_mask(want) if name == "ct" else self._matches(name, want, classes)
        sub = self._subset(mask)
        said = [*(getattr(x, "__name__", repr(x)) for x in layers), *(f"{k}={v!r}" for k, v in fields.items()),
                *([f"payload={payload!r}"] if payload is not None else [])]
        sub.selection = f"where({', '.join(said)}) matched {int(mask.sum()):,} of {len(r):,} packets" + \
            (f" (records kept for 1 packet in {self.step})" if self.step > 1 else "")
        return sub

    @property
    def output(self) -> Ether:
        """The only packet as the filter left it (unit tier); an error when there is more than one."""
        return self.verdict.output

    @property
    def outputs(self) -> list[Ether]:
        """Unit tier: every packet as the filter left it, in send order. Live tier: the frames that
        left the DUT (TX, REDIRECT) and arrived where pktassert listens, in send order."""
        if isinstance(self._outputs, LiveOutputs):
            came = set(self._outputs.positions())
            return [self.output_at(i) for i, p in enumerate(self.index.tolist()) if p in came]
        return [self.output_at(i) for i in range(len(self))]

    def output_at(self, pos: int) -> Ether:
        if self._outputs is None and self.tier == "live" and self.actions is not Verdict:
            raise PktassertError("the live tier does not pair the frames a tc filter sends on (OK, REDIRECT) with "
                                 "their packets. Fix: read what arrived with tc.received_by_peer() or "
                                 "tc.honeypot.received(), or use the unit tier, where c[i].output is the frame as "
                                 "the filter left it.")
        if self._outputs is None:
            raise PktassertError("no output frames were kept for this capture: a flood sampled above keep= "
                                 "keeps records only. Fix: a smaller count or a larger keep=, or xdp.run(packet).")
        return Ether(self._outputs[int(self.index[pos])])

    def rewritten(self) -> Capture:
        """The packets the filter changed (unit tier), or whose frame left the DUT changed (live tier)."""
        if self._outputs is None:
            self.output_at(0)  # raises the explanation
        assert self._outputs is not None
        return self._subset(np.isin(self.index, self._outputs.changed))

    def _has(self, layer: type[Packet]) -> np.ndarray:
        r = self.records
        if layer is Ether:
            return (r["parsed"] & const("P_L2")) > 0
        if layer is Dot1Q:
            return r["vlan_count"] > 0
        if layer is IP:
            return r["l3"] == 4
        if layer is IPv6:
            return r["l3"] == 6
        l4 = (r["parsed"] & const("P_L4")) > 0
        if layer in _PROTO:
            return l4 & (r["proto"] == _PROTO[layer]) & (r["l3"] == 4 if layer is ICMP else True)
        if layer.__name__.startswith("ICMPv6"):
            return l4 & (r["proto"] == 58)
        raise ValueError(f"where(): the inspector does not parse {layer.__name__}. It parses Ether, Dot1Q, "
                         f"IP, IPv6, TCP, UDP, ICMP and ICMPv6.")

    def _matches(self, name: str, want: Any, layers: Sequence[type[Packet]]) -> np.ndarray:
        r = self.records
        if name in ("src", "dst"):
            wants = [want] if isinstance(want, str) else list(want)
            hit = np.zeros(len(r), bool)
            for w in wants:
                if isinstance(w, str) and "/" in w:  # a prefix, as vary= takes it: "203.0.113.0/24"
                    net = ipaddress.ip_network(w, strict=False)
                    size = net.max_prefixlen // 8
                    mask = np.frombuffer(net.netmask.packed, np.uint8)
                    first = np.frombuffer(net.network_address.packed, np.uint8)
                    hit |= (r["l3"] == net.version) & ((r[name][:, :size] & mask) == first).all(axis=1)
                    continue
                version, packed = _address(w)
                hit |= (r["l3"] == version) & (r[name] == np.frombuffer(packed, np.uint8)).all(axis=1)
            return hit
        if name not in _COLUMNS:
            raise ValueError(f"where(): no parsed field {name!r}. Fields: src, dst, {', '.join(_COLUMNS)}.")
        col = r[_COLUMNS[name]]
        carried = self._carrier(name)  # a packet without the layer has 0 there, which must not match 0
        if name == "flags" and isinstance(want, str):
            want = _tcp_flags(want)
        if isinstance(want, (range, set, frozenset, list, tuple)):
            return carried & np.isin(col, [int(w) for w in want])
        return carried & (col == int(want))

    def _carrier(self, name: str) -> np.ndarray:
        """Which packets have the layer that carries field ``name``."""
        r = self.records
        l4 = (r["parsed"] & const("P_L4")) > 0
        if name in ("sport", "dport"):
            return l4 & np.isin(r["proto"], [6, 17])
        if name == "flags":
            return l4 & (r["proto"] == 6)
        if name in ("type", "code"):
            return l4 & np.isin(r["proto"], [1, 58])
        if name in ("ttl", "hlim", "proto", "nh"):
            return r["l3"] > 0
        if name == "vlan":
            return r["vlan_count"] > 0
        return np.ones(len(r), bool)

    def frame(self, pos: int) -> bytes:
        """The frame of the packet at ``pos`` as it was sent."""
        return self._frame(int(self.index[pos]))

    def summary(self, pos: int) -> str:
        """scapy's one-line summary of the packet at ``pos`` as it was sent, with its number."""
        return f"packet #{int(self.index[pos])}: {Ether(self.frame(pos)).summary()}"

    @property
    def prints(self) -> list[tuple[int, str]]:
        """(packet number, line) of everything the filter printed (bpf_printk) for these packets, in order."""
        if not self.printed:
            return []
        tags = self.records["tag"]
        printed = np.flatnonzero(np.isin(tags, np.fromiter(self.printed, np.int64)))
        return [(int(self.index[i]), line) for i in printed.tolist() for line in self.printed[int(tags[i])]]

    def counts_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counts().items()) or "none"

    def __repr__(self) -> str:
        sampled = f", records of 1 in {self.step}" if self.step > 1 else ""
        stray = f"; {self.stray} frames not sent by pktassert judged meanwhile" if self.stray else ""
        return f"<Capture {self.sent if self._exact is not None else len(self)} packets{sampled}: {self.counts_text()}{stray}>"
