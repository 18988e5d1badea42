"""The whole-stack half of a Capture: each packet's Fate, drop reason, the socket that took it and
the answer the stack gave (live tier, with the ``dut`` fixture's fate tracking)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pktassert.errors import PktassertError
from pktassert.instruments.record import const
from pktassert.observers.fate import BY_CODE, CODES, Fate, answer_of, reason_names
from pktassert.observers.fate_reader import FateReader
from pktassert.observers.nft_trace import MOST


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
                                 "rule set (@pytest.mark.nftables), or the inject() call sent more than "
                                 f"{MOST:,} packets (traced up to that many). Fix: inject fewer at once.")
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
        """What else is known of its fate: "reason NO_SOCKET; rule '...' in inet t input; answered RST"."""
        rule = self.rule if self.capture.fate_rules is not None else None
        after = self.dropped_by if self.capture.fate_rules is not None else None
        said = [f"reason {self.reason}" if self.reason else "", f"rule '{rule}' in {self.chain}" if rule else "",
                f"dropped by {after}; accepted by '{self.accepted_by}'" if after else "",
                f"answered {self.answer}" if self.answer else ""]
        return "; ".join(x for x in said if x)

    @property
    def socket(self) -> int | None:
        """The cookie (SO_COOKIE) of the test socket that took it, or None; dut.listener(cookie) names it."""
        r = self._fate_record()
        return int(r["socket"]) if r["flags"] & const("F_DELIVERED") else None
