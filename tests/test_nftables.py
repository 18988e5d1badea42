"""nftables rule sets under test: loaded fresh into each test's DUT namespace through libnftables,
nft's own errors, the rule that decided each packet, and the root namespace never touched."""

import os
import sys

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Fate, PktassertError, ProgramError
from pktassert.errors import HostLacks
from pktassert.netns import Namespace, Topology
from pktassert.programs.nft_ruleset import RuleSet

LIMITED = """
table ip svc {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 53 limit rate 1/minute burst 5 packets counter accept
    udp dport 53 counter drop
  }
}
"""


def _root_ruleset() -> str:
    import nftables  # Debian's python3-nftables; a context made here is bound to this (the root) namespace

    rc, out, err = nftables.Nftables().cmd("list ruleset")
    assert rc == 0, err
    return out


@pytest.fixture
def root_before():
    return _root_ruleset()


@pytest.mark.nftables(LIMITED)
def test_identical_packets_each_get_the_rule_that_decided_them(root_before, dut, inject):
    # Twenty identical datagrams: no header tells them apart, their order does (one veth queue).
    dut.listen(udp=53)
    r = inject(IP(dst=dut.ip) / UDP(sport=5353, dport=53) / b"same", count=20)
    assert r.fates() == {Fate.DELIVERED: 5, Fate.NETFILTER_DROPPED: 15}
    assert [p.fate for p in r[:5]] == [Fate.DELIVERED] * 5
    assert {p.rule for p in r[:5]} == {"udp dport 53 limit rate 1/minute counter accept"}
    assert {p.rule for p in r[5:]} == {"udp dport 53 counter drop"}
    assert {p.chain for p in r} == {"ip svc input"}
    assert dut.nft.counters() == {"udp dport 53 limit rate 1/minute counter accept": 5,
                                  "udp dport 53 counter drop": 15}
    assert _root_ruleset() == root_before  # the rule set and our tracing live in the DUT namespace only


@pytest.mark.nftables(LIMITED)
def test_each_test_gets_a_fresh_rule_set(dut, inject):
    dut.nft.nft("add rule ip svc input udp dport 54 drop")
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=5)
    assert r.count(Fate.NETFILTER_DROPPED) == 0  # the burst is whole again: a new namespace, a new rule set
    assert "udp dport 54 drop" in dut.nft.rules().values()


@pytest.mark.nftables(LIMITED)
@pytest.mark.parametrize("keep", [1_000_000, 1_000])
def test_every_packet_of_a_flood_has_its_rule(dut, inject, keep):
    # Each packet's rule is taken in the kernel as nftables sends its trace events (no cap on a call's size);
    # with keep= the sample's packets have theirs and the counts per rule stay exact. nft's own counters agree.
    dut.listen(udp=53)
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=100_000, vary={"src": "198.51.100.0/24"}, keep=keep)
    assert r.fates() == {Fate.DELIVERED: 5, Fate.NETFILTER_DROPPED: 99_995}
    assert r.reasons()["NETFILTER_DROP"] == 99_995
    counted = {("ip svc input", "udp dport 53 limit rate 1/minute counter accept"): 5,
               ("ip svc input", "udp dport 53 counter drop"): 99_995}
    assert r.rule_counts() == counted
    assert dut.nft.counters() == {rule: n for (_, rule), n in counted.items()}
    assert all(p.rule is not None for p in r)
    assert [p.rule for p in r.where(lambda p: True)][-1] == "udp dport 53 counter drop"


@pytest.mark.nftables(LIMITED)
def test_without_tracing_a_packets_rule_is_refused_with_why(dut, inject):
    dut.tracing = False
    r = inject(IP(dst=dut.ip) / UDP(dport=53), count=10)
    assert r.fates() == {Fate.ANSWERED: 5, Fate.NETFILTER_DROPPED: 5}
    with pytest.raises(PktassertError, match="dut.tracing"):
        r[0].rule


def test_a_rule_set_that_does_not_load_names_file_and_line(pktassert_ready, tmp_path):
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet t {\n  chain input {\n    tcp dport 22 acept\n  }\n}\n")
    with Topology() as topo, pytest.raises(ProgramError) as e:
        RuleSet(topo.dut.ns, bad)
    assert f"{bad}:3:" in str(e.value) and "acept" in str(e.value) and "Fix:" in str(e.value)


def test_without_libnftables_the_message_says_what_to_install(pktassert_ready, monkeypatch):
    # Mocked: CI has python3-nftables; its absence is simulated by hiding the module.
    monkeypatch.setitem(sys.modules, "nftables", None)
    with Topology() as topo, pytest.raises(HostLacks, match="apt-get install python3-nftables"):
        RuleSet(topo.dut.ns, "table inet t {}")


class _NoNfTables:
    """Mocked: this kernel has nf_tables built in; a kernel without it answers every command so."""

    class Nftables:
        def cmd(self, command: str) -> tuple[int, str, str]:
            return 1, "", "Error: Could not process rule: Operation not supported\n"


def test_a_kernel_without_nf_tables_is_the_hosts_lack_not_the_rule_sets(pktassert_ready, monkeypatch):
    monkeypatch.setitem(sys.modules, "nftables", _NoNfTables)
    with Topology() as topo, pytest.raises(HostLacks, match=r"CONFIG_NF_TABLES") as e:
        RuleSet(topo.dut.ns, "table inet t {}")
    assert e.value.need == "nf_tables" and "Operation not supported" in str(e.value)


SUITE = '''
import pytest
from scapy.layers.inet import IP, TCP, UDP
from pktassert import Fate

RULES = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy drop;
    tcp dport 22 accept
  }
}
"""

@pytest.mark.nftables(RULES)
@pytest.mark.parametrize("n", range(4))
def test_rules(dut, inject, n):
    dut.listen(tcp=22, udp=53)
    assert inject(IP(dst=dut.ip) / TCP(dport=22, flags="S"), count=3).fates() == {Fate.DELIVERED: 3}
    assert inject(IP(dst=dut.ip) / UDP(dport=53), count=3000).fates() == {Fate.NETFILTER_DROPPED: 3000}
'''


def test_runs_with_rule_sets_leave_the_root_namespace_as_it_was(pytester, pktassert_ready):
    from pktassert.netns.snapshot import differences, snapshot  # root namespace: links, addresses, sysctls, rule set

    before = snapshot()
    pytester.makepyfile(test_rules=SUITE)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-n", "2")
    res.assert_outcomes(passed=4)
    assert differences(before, snapshot()) == []


def _sockets() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.usefixtures("pktassert_ready")
def test_a_rule_set_nft_rejects_holds_no_socket_while_its_error_lives():
    # The error keeps the RuleSet's frames alive (a test's excinfo, a log): its libnftables context's netlink socket
    # would then keep the namespace alive after its fd is closed.
    with Namespace("pktassert test") as ns:
        before = _sockets()
        with pytest.raises(ProgramError, match="nftables rejects") as excinfo:
            RuleSet(ns, "table inet t { chain c { this is not nft } }")
        assert _sockets() == before, excinfo.value


EARLY = """
table netdev early {
  chain ingress {
    type filter hook ingress device dut0 priority -1500; policy accept;
    udp dport 9 drop
  }
}
"""


@pytest.mark.nftables(EARLY)
def test_a_netdev_ingress_chain_of_the_rule_sets_is_traced_too(dut, inject):
    # pktassert's own chain (it turns tracing on) comes before any chain of the rule set on the DUT's veth
    r = inject([IP(dst=dut.ip) / UDP(dport=9), IP(dst=dut.ip) / UDP(dport=10)])
    assert r[0].fate == Fate.NETFILTER_DROPPED and (r[0].chain, r[0].rule) == ("netdev early ingress", "udp dport 9 drop")
    assert r[1].rule == "policy accept" and r[1].chain == "netdev early ingress"
