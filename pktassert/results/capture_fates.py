"""The whole-stack half of a Capture: each packet's Fate, drop reason, the socket that took it and
the answer the stack gave (live tier, with the ``dut`` fixture's fate tracking)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pktassert.errors import HostLacks, PktassertError
from pktassert.instruments.record import const
from pktassert.observers import conntrack
from pktassert.observers.conntrack import Ct
from pktassert.observers.fate import BY_CODE, CODES, Fate, answer_of, reason_names
from pktassert.observers.fate_reader import FateReader

_NO_NETFILTER = ("connection states and NAT need BPF netfilter programs (Linux 6.4), which this kernel lacks. "
                 "Fix: run these tests on Linux 6.4 or newer; fates and rules work here.")


class CaptureFates:
    """Mixed into Capture: ``fate_codes``/``fate_records`` align with its records."""

    tier: str
    fate_codes: np.ndarray | None
    fate_records: np.ndarray | None
    fate_rules: np.ndarray | None
    _fate_exact: FateReader | None
    sent: int

    def _need_fates(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        if self.fate_codes is None or self.fate_records is None:
            if self.tier == "unit":
                raise PktassertError(f"{what}: the unit tier runs the filter alone (BPF_PROG_TEST_RUN), there is no "
                                     f"stack behind it for a packet to meet. Fix: run the test in the live tier "
                                     f"(@pytest.mark.parametrize(\"tier\", [\"live\"], indirect=True)).")
            raise PktassertError(f"{what}: this capture has no fates: pktassert tracks them for the `dut` fixture "
                                 f"(ingress). Fix: ask for `dut` in the test's arguments instead of `xdp`/`tc`.")
        return self.fate_codes, self.fate_records

    def fate_count(self, fate: Fate) -> int:
        codes, _ = self._need_fates(f"count({fate!r})")
        if self._fate_exact is not None:
            return int(self._fate_exact.exact[CODES[fate]])
        return int((codes == CODES[fate]).sum())

    def fates(self) -> dict[Fate, int]:
        """How many packets met each fate (exact for a whole flood, of the sample after where())."""
        codes, _ = self._need_fates("fates()")
        if self._fate_exact is not None:
            return self._fate_exact.fate_counts()
        vals, n = np.unique(codes, return_counts=True)
        return {BY_CODE[int(v)]: int(c) for v, c in zip(vals, n)}

    def _need_ct(self, what: str) -> np.ndarray:
        _, recs = self._need_fates(what)
        if getattr(self, "rules_unknown", None) is None and getattr(self, "fate_rules", None) is None:
            raise PktassertError(f"{what}: connection states are known for a DUT with a rule set "
                                 f"(@pytest.mark.nftables(...)): pktassert watches conntrack there. Fix: give the "
                                 f"test its rule set.")
        if not self.netfilter:  # type: ignore[attr-defined]
            # The kernel lacks it, not the test: a skip naming it (a failure under --pktassert-require).
            raise HostLacks("BPF netfilter programs", f"{what}: {_NO_NETFILTER}")
        return recs

    def ct_codes(self) -> np.ndarray:
        """Each packet's Ct code (observers/conntrack.py CODES)."""
        return conntrack.ct_codes(self._need_ct("ct"), self.ct_active)  # type: ignore[attr-defined]

    def ct_states(self) -> dict[Ct, int]:
        """How many packets had each connection state when the rule set judged them (exact for a whole
        flood; of the sample after where())."""
        recs = self._need_ct("ct_states()")
        active = self.ct_active  # type: ignore[attr-defined]
        if self._fate_exact is not None:  # every packet's ct_info counted: each value's state, summed
            every = np.zeros(16, np.dtype([("ct_info", np.uint8)]))
            every["ct_info"] = np.arange(16)
            n = np.bincount(conntrack.ct_codes(every, active), weights=self._fate_exact.ct_infos,
                            minlength=len(Ct)).astype(np.int64)
        else:
            n = np.bincount(conntrack.ct_codes(recs, active), minlength=len(Ct))
        return {conntrack.BY_CODE[i]: int(c) for i, c in enumerate(n) if c}

    def ct_mask(self, want: object) -> np.ndarray:
        """where(ct=...): "invalid", Ct.INVALID, or a collection of them."""
        wanted = want if isinstance(want, (set, frozenset, list, tuple)) else [want]
        codes = set()
        for w in wanted:
            ct = w if isinstance(w, Ct) else Ct.__members__.get(str(w).upper())
            if ct is None:
                raise PktassertError(f"where(ct={w!r}): a connection state is one of "
                                     f"{', '.join(c.name.lower() for c in Ct)} (or Ct.NEW, ...).")
            codes.add(conntrack.CODES[ct])
        return np.isin(self.ct_codes(), list(codes))

    def rule_counts(self) -> dict[tuple[str, str], int]:
        """How many packets each rule decided: (chain, rule as nft prints it) -> packets, exact for a whole
        flood (every packet's rule is traced), of the sample after where()."""
        tally = self.facts.rule_tally if self._fate_exact is not None else None  # type: ignore[attr-defined]
        if tally is None:
            rules = self.fate_rules
            if rules is None:
                raise PktassertError(self.rules_unknown or "no nftables rule is known for this capture: it has no "  # type: ignore[attr-defined]
                                     "rule set (@pytest.mark.nftables). Fix: give the test its rule set.")
            tally = {}
            for d in rules.tolist():
                if d is not None:
                    tally[d] = tally.get(d, 0) + 1
        out: dict[tuple[str, str], int] = {}
        for (chain, rule, _), n in tally.items():
            out[(chain, rule)] = out.get((chain, rule), 0) + n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def reasons(self) -> dict[str, int]:
        """The kernel's drop reasons (``enum skb_drop_reason`` names of the running kernel, without
        SKB_DROP_REASON_) and how many packets were dropped for each, filters' own drops excluded
        where the filter's verdict says it all (XDP_DROP has no sk_buff to free)."""
        _, recs = self._need_fates("reasons()")
        if self._fate_exact is not None:
            return self._fate_exact.reason_counts()
        dropped = (recs["flags"] & const("F_DROPPED")) != 0
        names = reason_names()
        vals, n = np.unique(recs["reason"][dropped], return_counts=True)
        return {names.get(int(v), str(int(v))): int(c) for v, c in sorted(zip(vals, n), key=lambda vc: -vc[1])}


class OutcomeFate:
    """Mixed into Outcome: this packet's fate."""

    capture: Any
    pos: int

    def _fate_record(self) -> Any:
        _, recs = self.capture._need_fates("a packet's fate")
        return recs[self.pos]

    @property
    def fate(self) -> Fate:
        codes, _ = self.capture._need_fates("a packet's fate")
        return BY_CODE[int(codes[self.pos])]

    @property
    def reason(self) -> str | None:
        """The kernel's drop reason by name, or None when it was not dropped as an sk_buff."""
        r = self._fate_record()
        return reason_names().get(int(r["reason"]), str(int(r["reason"]))) if r["flags"] & const("F_DROPPED") else None

    @property
    def answer(self) -> str | None:
        """How the stack (or a reject rule) answered it: "RST", "ICMP 3/3" (type/code, ICMPv6 too), None,
        or "unknown" when an answer left but could not be tied to it."""
        return answer_of(self._fate_record())

    def _decision(self) -> tuple[str, str, bool] | None:
        self.capture._need_fates("a packet's rule")
        rules = self.capture.fate_rules
        if rules is None:
            raise PktassertError(self.capture.rules_unknown or "no nftables rule is known for this capture: it has no "
                                 "rule set (@pytest.mark.nftables). Fix: give the test its rule set.")
        return rules[self.pos]  # type: ignore[no-any-return]

    def _deciding(self) -> tuple[str, str, bool] | None:
        """The rule set's decision, unless netfilter dropped the packet after the rule set accepted it."""
        d = self._decision()
        return None if d is None or (d[2] and self.fate == Fate.NETFILTER_DROPPED) else d

    @property
    def rule(self) -> str | None:
        """The nftables rule that decided this packet, as nft prints it (``policy drop`` for a
        chain's policy); None when no trace event was seen for it (it never reached netfilter), or
        when netfilter dropped it after a rule accepted it (see ``accepted_by``, ``dropped_by``)."""
        d = self._deciding()
        return None if d is None else d[1]

    @property
    def chain(self) -> str | None:
        """The chain of that rule: ``inet edge input`` (family, table, chain)."""
        d = self._deciding()
        return None if d is None else d[0]

    @property
    def accepted_by(self) -> str | None:
        """The rule that accepted a packet netfilter then dropped all the same (conntrack, say), else None."""
        d = self._decision()
        return d[1] if d is not None and d[2] and self.fate == Fate.NETFILTER_DROPPED else None

    @property
    def dropped_by(self) -> str | None:
        """What dropped a packet the rule set had accepted: conntrack (when its own counters rose in this
        inject()) or netfilter, with the kernel's reason; None for any other packet."""
        if self.accepted_by is None:
            return None
        ct = self.capture.conntrack
        counted = ", ".join(f"{k} {ct[k]}" for k in ("insert_failed", "drop", "early_drop", "invalid") if ct.get(k))
        if ct.get("drop") or ct.get("insert_failed") or ct.get("early_drop"):
            return (f"conntrack, after the rule set accepted it (reason {self.reason}; in this inject() conntrack "
                    f"counted {counted})")
        return f"netfilter, after the rule set accepted it (reason {self.reason}; conntrack counted no drop)"

    def detail(self) -> str:
        """What else is known of its fate: "reason NO_SOCKET; rule '...' in inet t input; answered RST; ct new"."""
        rule = self.rule if self.capture.fate_rules is not None else None
        after = self.dropped_by if self.capture.fate_rules is not None else None
        ct, nat = "", ""
        if self.capture.fate_rules is not None and self.capture.netfilter:
            ct = f"ct {self.ct.name.lower()}" if self.ct != Ct.NONE else ""
            if {"src_nat", "dst_nat"} & self.ct_status:  # only then worth parsing the packet for
                nat = ", ".join(self.nat)
        said = [f"reason {self.reason}" if self.reason else "", f"rule '{rule}' in {self.chain}" if rule else "",
                f"dropped by {after}; accepted by '{self.accepted_by}'" if after else "",
                f"answered {self.answer}" if self.answer else "", ct, nat]
        return "; ".join(x for x in said if x)

    @property
    def ct(self) -> Ct:
        """The packet's connection state when the rule set judged it (nftables' ``ct state``)."""
        recs = self.capture._need_ct("ct")
        return conntrack.BY_CODE[int(conntrack.ct_codes(recs[self.pos:self.pos + 1], self.capture.ct_active)[0])]

    @property
    def ct_reply(self) -> bool:
        """Whether it went the reply way of its connection (nftables' ``ct direction reply``)."""
        return conntrack.reply(self.capture._need_ct("ct_reply")[self.pos])

    @property
    def ct_status(self) -> frozenset[str]:
        """Its connection's status then: confirmed, assured, seen_reply, dying, src_nat, dst_nat, ...;
        confirm_failed when conntrack could not confirm it after the rule set accepted it."""
        return conntrack.status(self.capture._need_ct("ct_status")[self.pos])

    @property
    def nat(self) -> tuple[str, ...]:
        """What NAT rewrote: ("IP.dst: 192.0.2.1 -> 198.51.100.7 at nat prerouting", ...); () for nothing."""
        rec = self.capture._need_ct("nat")[self.pos]
        return conntrack.rewrites(rec, *_addressing(self.capture.frame(self.pos)))

    @property
    def socket(self) -> int | None:
        """The cookie (SO_COOKIE) of the test socket that took it, or None; dut.listener(cookie) names it."""
        r = self._fate_record()
        return int(r["socket"]) if r["flags"] & const("F_DELIVERED") else None


def _addressing(frame: bytes) -> tuple[tuple[str, str, int | None, int | None], str | None]:
    """A sent frame's addresses and ports (as conntrack.rewrites compares them), and its transport's name."""
    p = Ether(frame)
    ip = p.getlayer(IP) or p.getlayer(IPv6)
    if ip is None:
        return ("", "", None, None), None
    l4 = p.getlayer(TCP) or p.getlayer(UDP)
    if l4 is None:
        return (str(ip.src), str(ip.dst), None, None), None
    return (str(ip.src), str(ip.dst), int(l4.sport), int(l4.dport)), type(l4).__name__
