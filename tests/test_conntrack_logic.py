"""The Python half of connection states, rules and NAT (pure logic, no root): how a fate record's
conntrack and rule fields (bpf/fate.h) are read. The kernel half is tested in test_conntrack_states.py."""

import ipaddress

import numpy as np

from pktassert.instruments.record import const
from pktassert.observers import conntrack
from pktassert.observers.conntrack import Ct
from pktassert.observers.nft_trace import rule_keys

TUPLE = np.dtype([("saddr", "u1", 16), ("daddr", "u1", 16), ("sport", ">u2"), ("dport", ">u2")])
RECORD = np.dtype([("flags", "<u4"), ("ct_info", "u1"), ("ct_status", "<u4"), ("ct_status_end", "<u4"),
                   ("mid_hook", "u1"), ("end_hook", "u1"), ("version", "u1"), ("mid", TUPLE), ("end", TUPLE),
                   ("rule_handle", "<u8"), ("rule_chain", "<u4"), ("rule_family", "u1"), ("rule_kind", "u1"),
                   ("rule_verdict", "u1")])


def _records(*infos: int) -> np.ndarray:
    r = np.zeros(len(infos), RECORD)
    r["ct_info"] = infos
    return r


def test_a_packet_without_a_connection_is_invalid_only_where_conntrack_ran():
    r = _records(3, 1, 4, const("CT_NONE"), 0, 8)
    names = [conntrack.BY_CODE[c] for c in conntrack.ct_codes(r, active=True)]
    assert names == [Ct.NEW, Ct.ESTABLISHED, Ct.ESTABLISHED, Ct.INVALID, Ct.NONE, Ct.UNTRACKED]
    # no conntrack in the namespace: "no connection" is not "invalid"
    assert conntrack.BY_CODE[conntrack.ct_codes(r, active=False)[3]] == Ct.NONE
    assert [conntrack.reply(x) for x in r] == [False, False, True, False, False, False]


def test_status_names_and_a_failed_confirm():
    r = _records(3)[0]
    r["ct_status"] = 1 << 3 | 1 << 5  # confirmed, dst_nat (just after conntrack)
    assert conntrack.status(r) == {"confirmed", "dst_nat"}
    r["flags"] = const("F_NF_END") | const("F_DROPPED")  # passed pktassert's last hook, then dropped: confirm
    r["ct_status_end"] = 1 << 5
    assert conntrack.status(r) == {"dst_nat", "confirm_failed"}
    r["ct_status_end"] = 1 << 3 | 1 << 5
    assert "confirm_failed" not in conntrack.status(r)


def _put(t: np.void, src: str, dst: str, sport: int, dport: int) -> None:
    t["saddr"][:4] = np.frombuffer(ipaddress.IPv4Address(src).packed, np.uint8)
    t["daddr"][:4] = np.frombuffer(ipaddress.IPv4Address(dst).packed, np.uint8)
    t["sport"], t["dport"] = sport, dport


def test_rewrites_name_the_field_the_values_and_where():
    r = _records(3)[0]
    r["version"], r["mid_hook"], r["end_hook"] = 4, 2, 2  # taken at input, first and last
    _put(r["mid"], "203.0.113.7", "198.51.100.7", 40000, 22)
    _put(r["end"], "198.51.100.99", "198.51.100.7", 40000, 22)
    sent = ("203.0.113.7", "192.0.2.1", 40000, 8080)
    assert conntrack.rewrites(r, sent, "TCP") == (
        "IP.dst: 192.0.2.1 -> 198.51.100.7 at nat prerouting", "TCP.dport: 8080 -> 22 at nat prerouting",
        "IP.src: 203.0.113.7 -> 198.51.100.99 at nat input")
    r["mid_hook"] = 0  # never got past prerouting: nothing known to be rewritten
    assert conntrack.rewrites(r, sent, "TCP") == ()


def test_rule_keys_tell_rules_policies_and_verdicts_apart():
    r = np.zeros(4, RECORD)
    r["rule_kind"] = [1, 1, 2, 1]
    r["rule_handle"] = [7, 7, 0, 8]
    r["rule_verdict"] = [1, 1, 0, 1]
    r["rule_chain"] = 12345
    keys = rule_keys(r)
    assert (keys[0] == keys[1]).all() and not (keys[0] == keys[2]).all() and not (keys[0] == keys[3]).all()


def test_unique_rows_agrees_with_numpys():
    from pktassert.observers.nft_trace import unique_rows

    rng = np.random.default_rng(7)
    keys = np.stack([rng.integers(0, 5, 10_000, dtype=np.uint64) * np.uint64(2**40),
                     rng.integers(0, 3, 10_000, dtype=np.uint64) * np.uint64(2**50 + 3)], axis=1)
    rows, inverse, counts = unique_rows(keys)
    want, want_inverse, want_counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    assert (rows == want).all() and (inverse == want_inverse.reshape(-1)).all() and (counts == want_counts).all()
    assert (rows[inverse] == keys).all()
