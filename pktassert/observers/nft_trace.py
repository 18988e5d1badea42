"""Which nftables rule decided each packet: nftables' own tracing (``meta nftrace set 1`` in a netdev
ingress chain of pktassert's on the DUT's veth, before any of the rule set's chains).

The trace events are read where the kernel sends them: a socket filter of the fate tracker's
(bpf/fates.bpf.c, pktassert_on_trace) on pktassert's trace socket runs as each event is sent, in the
packet's own processing, and writes the deciding rule into the packet's fate record (bpf/fate.h:
rule_kind, rule_family, rule_chain, rule_handle, rule_verdict). Nothing is queued or parsed here:
every packet of any flood has its rule. This module names those records' rules as nft prints them."""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from pktassert.instruments.fate_tracker import FateTracker
from pktassert.instruments.record import const
from pktassert.kernel.conntrack_stats import conntrack_stats, rose
from pktassert.netns import Namespace
from pktassert.programs.nft_ruleset import OURS, RuleSet

NETLINK_NETFILTER, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE = 12, 270, 1, 9
SO_ATTACH_BPF = 50
TABLE = OURS[0]
TERMINAL = {0: "drop", 1: "accept", 2: "stolen", 3: "queue"}
NF_ACCEPT = 1
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
NAME_MOST = 64  # bytes of a table's or chain's name the tracker hashes (bpf/fates.bpf.c NAME_MOST)

Decision = tuple[str, str, bool]  # chain, rule (or "policy drop"), whether it accepted the packet


def _fnv(name: str) -> int:
    h = 2166136261
    for b in name.encode()[:NAME_MOST]:
        if not b:
            break
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def chain_key(table: str, chain: str) -> int:
    """The tracker's key of a chain (bpf/fates.bpf.c pktassert_on_trace: rule_chain)."""
    return (_fnv(table) ^ (_fnv(chain) * 0x9E3779B1)) & 0xFFFFFFFF


class Tracer:
    """nftables tracing of the DUT namespace's packets, decided in the kernel; and the fate
    tracker's netfilter programs (connection state, NAT), which belong to the rule set's namespace."""

    def __init__(self, ns: Namespace, ruleset: RuleSet, ifname: str, tracker: FateTracker) -> None:
        self.ruleset, self.ns = ruleset, ns
        # The trace socket must exist for nftables to send events (it sends none without a listener);
        # its filter takes every event and keeps none.
        self.sock = ns.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, tracker.trace_fd)
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
        self._conntrack: dict[str, int] = {}
        self.links: list[int] = []
        self.netfilter = tracker.netfilter
        self._names: dict[tuple[int, int], tuple[str, str, str]] | None = None
        self._rules: dict[tuple[str, str, int], str] | None = None
        ruleset.nft(f"add table netdev {TABLE}")
        # The lowest priority there is: a netdev ingress chain of the rule set's (at any other) comes after it.
        ruleset.nft(f"add chain netdev {TABLE} pktassert_in {{ type filter hook ingress device {ifname} "
                    f"priority -2147483648; }}")
        self.on = False
        self._output = False
        self.links = tracker.attach_netfilter(ns)

    def trace_output(self) -> None:
        """Trace what the DUT's stack sends too (inject.from_dut through a rule set): a chain at the output
        hook before any of the rule set's (made on first use: every packet the DUT sends is then traced)."""
        if self._output:
            return
        self.ruleset.nft(f"add table inet {TABLE}")
        self.ruleset.nft(f"add chain inet {TABLE} pktassert_out {{ type filter hook output priority -2147483000; }}")
        self.ruleset.nft(f"add rule inet {TABLE} pktassert_out meta nftrace set 1 accept")
        self._output = True

    def switch(self, on: bool) -> None:
        if on != self.on:
            # "accept" ends pktassert's chain with this rule's event: no policy event follows it.
            self.ruleset.nft(f"add rule netdev {TABLE} pktassert_in meta nftrace set 1 accept" if on
                             else f"flush chain netdev {TABLE} pktassert_in")
            self.on = on

    def start(self) -> None:
        """Before an inject(): conntrack's counters as they are; the rule set's names as they are now."""
        self._conntrack = conntrack_stats(self.ns)
        self._names = self._rules = None

    def conntrack_rose(self) -> dict[str, int]:
        """What conntrack counted (drop, insert_failed, invalid, ...) since start()."""
        return rose(self._conntrack, conntrack_stats(self.ns))

    def _chains(self) -> dict[tuple[int, int], tuple[str, str, str]]:
        if self._names is None:
            inverse = {v: k for k, v in FAMILIES.items()}
            self._names = {}
            for item in self.ruleset.listing().get("nftables", []):
                c = item.get("chain")
                if c and c["table"] not in OURS:
                    key = (inverse.get(str(c["family"]), 0), chain_key(str(c["table"]), str(c["name"])))
                    self._names[key] = (str(c["family"]), str(c["table"]), str(c["name"]))
        return self._names

    def decision(self, kind: int, family: int, chain: int, handle: int, verdict: int) -> Decision | None:
        """The (chain, rule, accepted) a record's rule fields name, as nft prints them."""
        if kind == const("RULE_NONE"):
            return None
        if self._rules is None:
            self._rules = self.ruleset.rules()
        fam, table, name = self._chains().get((family, chain), (FAMILIES.get(family, str(family)), "?", f"#{chain:08x}"))
        where = f"{fam} {table} {name}"
        if kind == const("RULE_POLICY"):
            return where, f"policy {TERMINAL.get(verdict, str(verdict))}", verdict == NF_ACCEPT
        return where, self._rules.get((fam, table, handle), f"handle {handle}"), verdict == NF_ACCEPT

    def decide(self, records: np.ndarray) -> np.ndarray:
        """Per fate record: its Decision, or None (no rule decided it: it never reached netfilter)."""
        keys = rule_keys(records)
        out = np.empty(len(records), object)
        if not len(records):
            return out
        uniq, inverse, _ = unique_rows(keys)
        named = np.empty(len(uniq), object)
        named[:] = [self.decision(*_unpack(k)) for k in uniq]
        out[:] = named[inverse]
        return out

    def counts(self, keys: dict[tuple[int, int], int]) -> dict[Decision, int]:
        """Packets per deciding rule, from FateReader's exact tally (``rule_key`` pairs -> count)."""
        out: dict[Decision, int] = {}
        for k, n in keys.items():
            d = self.decision(*_unpack(np.array(k, np.uint64)))
            if d is not None:
                out[d] = out.get(d, 0) + n
        return out

    def close(self) -> None:
        while self.links:
            os.close(self.links.pop())
        self.sock.close()


def rule_keys(records: np.ndarray) -> np.ndarray:
    """Two uint64 per record that say its rule: the handle; chain key, family, kind and verdict."""
    packed = (records["rule_chain"].astype(np.uint64) | records["rule_family"].astype(np.uint64) << np.uint64(32)
              | records["rule_kind"].astype(np.uint64) << np.uint64(40)
              | records["rule_verdict"].astype(np.uint64) << np.uint64(48))
    return np.stack([records["rule_handle"].astype(np.uint64), packed], axis=1)


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, axis=0, return_inverse=True, return_counts=True) for two uint64 columns, exact and
    ~20x faster for a flood's million rows: each column made small integers first, then one 1-D unique."""
    first, a = np.unique(keys[:, 0], return_inverse=True)
    second, b = np.unique(keys[:, 1], return_inverse=True)
    combined, inverse, counts = np.unique(a.reshape(-1).astype(np.int64) * len(second) + b.reshape(-1),
                                          return_inverse=True, return_counts=True)
    rows = np.stack([first[combined // len(second)], second[combined % len(second)]], axis=1)
    return rows, inverse.reshape(-1), counts


def _unpack(k: Any) -> tuple[int, int, int, int, int]:
    handle, packed = int(k[0]), int(k[1])
    return (packed >> 40) & 0xFF, (packed >> 32) & 0xFF, packed & 0xFFFFFFFF, handle, (packed >> 48) & 0xFF
