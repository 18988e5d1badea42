"""The kernel's drop reasons explained: a meaning for each reason of the running kernel, a cause and a
fix for the common ones, shown in failure messages and in the evidence, and never text for a reason
the running kernel lacks."""

import json
import os
import xml.etree.ElementTree as ET

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Fate
from pktassert.observers import drop_reasons
from pktassert.observers.drop_reasons import CAUSE, MEANING, cause, explain, meaning
from pktassert.observers.fate import reason_names
from pktassert.reports import evidence
from pktassert.results.assertion import reason_lines

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, BPF")
MOST_UNDESCRIBED = 3  # reasons of the running kernel the table may lack (newer than the table)


def _kernel(monkeypatch, *names):
    """Pretend the running kernel's BTF defines only ``names`` (the table never asks any other)."""
    monkeypatch.setattr(drop_reasons, "reason_names", lambda: dict(enumerate(names, 2)))


def test_a_common_reason_has_its_meaning_cause_and_fix(monkeypatch):
    _kernel(monkeypatch, "NOT_SPECIFIED", "NO_SOCKET", "TCP_CSUM")
    assert meaning("NO_SOCKET") == MEANING["NO_SOCKET"]
    assert cause("NO_SOCKET").startswith("Usual cause: the test sent to a port")
    said = explain("NO_SOCKET")
    assert said.startswith(f"NO_SOCKET: {MEANING['NO_SOCKET']}. Usual cause: ")
    assert "Fix: dut.listen(tcp=PORT)" in said and "before inject()" in said
    assert "leave chksum unset" in explain("TCP_CSUM") and "leave chksum unset" not in said


def test_a_rare_reason_has_a_meaning_and_no_cause(monkeypatch):
    _kernel(monkeypatch, "TCP_MD5FAILURE")
    assert "TCP_MD5FAILURE" not in CAUSE
    assert cause("TCP_MD5FAILURE") is None
    assert explain("TCP_MD5FAILURE") == f"TCP_MD5FAILURE: {MEANING['TCP_MD5FAILURE']}."


def test_a_reason_the_kernel_lacks_shows_no_text(monkeypatch):
    # A kernel without TCP_CSUM (simulated: the table knows it, this "kernel" does not): its
    # numbers and names are not the table's to assume, so nothing is said about it.
    _kernel(monkeypatch, "NOT_SPECIFIED", "NO_SOCKET")
    assert "TCP_CSUM" in MEANING and "TCP_CSUM" in CAUSE
    assert (meaning("TCP_CSUM"), cause("TCP_CSUM"), explain("TCP_CSUM")) == (None, None, "TCP_CSUM")
    assert explain("4711") == "4711"  # a number the kernel has no name for (capture_fates shows it so)
    assert reason_lines({"TCP_CSUM": 2, "NO_SOCKET": 1}) == [f"  {explain('NO_SOCKET')}"]


def test_a_kernel_reason_the_table_lacks_says_so(monkeypatch):
    _kernel(monkeypatch, "NO_SOCKET", "SOMETHING_NEWER")
    assert meaning("SOMETHING_NEWER") == "no description in pktassert's table for this kernel's reason SOMETHING_NEWER"
    assert cause("SOMETHING_NEWER") is None
    assert explain("SOMETHING_NEWER") == f"SOMETHING_NEWER: {meaning('SOMETHING_NEWER')}."


def test_the_tables_are_short_lines_and_agree():
    assert set(CAUSE) <= set(MEANING), sorted(set(CAUSE) - set(MEANING))
    long = {n: m for n, m in MEANING.items() if len(m) > 110 or "\n" in m or m.endswith(".")}
    assert not long
    bad = {n: c for n, c in CAUSE.items() if not c[1].startswith("Fix: ") or len(c[0]) > 150}
    assert not bad
    common = {"NO_SOCKET", "NETFILTER_DROP", "TCP_CSUM", "UDP_CSUM", "IP_CSUM", "SOCKET_RCVBUFF", "IP_NOPROTO",
              "OTHERHOST", "PKT_TOO_SMALL", "IP_INHDR", "IP_RPFILTER", "UNICAST_IN_L2_MULTICAST", "NEIGH_FAILED",
              "TCP_FLAGS", "TCP_INVALID_SEQUENCE", "TCP_OLD_DATA", "TC_INGRESS", "TC_EGRESS", "XDP",
              "SOCKET_FILTER", "IPV6DISABLED", "NOT_SPECIFIED", "TCP_RESET"}
    assert common <= set(CAUSE), sorted(common - set(CAUSE))


def test_every_reason_of_the_running_kernel_has_a_meaning():
    names = sorted(set(reason_names().values()))
    assert "NO_SOCKET" in names and len(names) > 60  # read from this kernel's BTF, not from the table
    missing = [n for n in names if n not in MEANING]
    print(f"{len(names)} reasons in this kernel's BTF; without a meaning in pktassert's table: {missing or 'none'}")
    assert len(missing) <= MOST_UNDESCRIBED, f"reasons of this kernel without a meaning: {missing}"


class _Capture:
    """What evidence.reason_notes() reads of a Capture: fates (or none) and the reasons counted."""

    def __init__(self, reasons):
        self.fate_codes = self.fate_records = None if reasons is None else []
        self._reasons = reasons

    def reasons(self):
        return self._reasons


def test_the_evidence_explains_each_reason_seen_once(monkeypatch):
    _kernel(monkeypatch, "NO_SOCKET", "NETFILTER_DROP")  # a kernel without TCP_CSUM, simulated
    caps = [_Capture({"NO_SOCKET": 2, "TCP_CSUM": 1}), _Capture(None), _Capture({"NETFILTER_DROP": 5, "NO_SOCKET": 4})]
    assert evidence.reasons_seen(caps) == {"NO_SOCKET": 6, "NETFILTER_DROP": 5, "TCP_CSUM": 1}
    assert evidence.reason_notes(caps) == [f"NO_SOCKET=6: {MEANING['NO_SOCKET']}. {cause('NO_SOCKET')}",
                                           f"NETFILTER_DROP=5: {MEANING['NETFILTER_DROP']}. {cause('NETFILTER_DROP')}",
                                           "TCP_CSUM=1"]
    facts = evidence.reason_facts(caps)
    assert facts[0] == {"reason": "NO_SOCKET", "packets": 6, "meaning": MEANING["NO_SOCKET"],
                        "cause": cause("NO_SOCKET")}
    assert facts[2] == {"reason": "TCP_CSUM", "packets": 1, "meaning": None, "cause": None}


def _message(check):
    """The failure message pytest makes of a failing assert (pktassert's assertrepr hook included)."""
    with pytest.raises(AssertionError) as failed:
        check()
    return str(failed.value)


@root
def test_a_failed_fate_count_explains_no_socket(dut, inject):
    r = inject(IP(dst=dut.ip) / TCP(dport=81, flags="S"), count=3)  # nothing listens on 81

    def check():
        assert r.count(Fate.DELIVERED) == 3

    msg = _message(check)
    assert "the kernel's drop reasons: NO_SOCKET=3" in msg
    assert f"NO_SOCKET: {MEANING['NO_SOCKET']}." in msg
    assert "Usual cause: the test sent to a port (or protocol) the DUT does not listen on." in msg
    assert "Fix: dut.listen(tcp=PORT)" in msg


@root
def test_the_explanation_follows_the_packet(dut, inject):
    dut.listen(tcp=22)
    bad = inject(IP(dst=dut.ip) / TCP(dport=22, flags="S", chksum=0x1234), count=2)
    closed = inject(IP(dst=dut.ip) / TCP(dport=23, flags="S"), count=2)

    def bad_delivered():
        assert bad.count(Fate.DELIVERED) == 2

    def closed_delivered():
        assert closed.count(Fate.DELIVERED) == 2

    csum, no_socket = _message(bad_delivered), _message(closed_delivered)
    assert f"TCP_CSUM: {MEANING['TCP_CSUM']}." in csum and "leave chksum unset" in csum
    assert "NO_SOCKET" not in csum
    assert f"NO_SOCKET: {MEANING['NO_SOCKET']}." in no_socket and "TCP_CSUM" not in no_socket


SUITE = '''
from scapy.layers.inet import IP, TCP
from pktassert import Fate

def test_closed_port(dut, inject):
    r = inject(IP(dst=dut.ip) / TCP(dport=81, flags="S"), count=2)
    assert r.count(Fate.DELIVERED) == 2
'''


@root
def test_the_evidence_of_a_failed_test_explains_its_reasons(pytester, pktassert_ready):
    pytester.makepyfile(test_suite=SUITE)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--junitxml=j.xml")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*pktassert evidence*", "the kernel's drop reasons:",
                              f"  NO_SOCKET=2: {MEANING['NO_SOCKET']}. Usual cause: *Fix: dut.listen(tcp=PORT)*"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "j.xml").iter("property")}
    facts = json.loads(props["pktassert_evidence"])["drop_reasons"]
    assert facts == [{"reason": "NO_SOCKET", "packets": 2, "meaning": MEANING["NO_SOCKET"],
                      "cause": cause("NO_SOCKET")}]
