"""Topology: namespaces and veth made inside throwaway namespaces, never in the root one."""

import socket
import subprocess

import pytest

from pktassert.netns import Topology
from pktassert.netns.snapshot import snapshot


def _links(ns):
    return sorted(l.get_attr("IFLA_IFNAME") for l in ns.ipr.get_links())


def test_veth_pair_lives_only_in_the_two_namespaces(pktassert_ready):
    root_before = socket.if_nameindex()
    with Topology() as topo:
        assert _links(topo.dut.ns) == ["dut0", "lo"]
        assert _links(topo.peer.ns) == ["lo", "peer0"]
        assert socket.if_nameindex() == root_before
        addrs = {a.get_attr("IFA_ADDRESS") for a in topo.dut.ns.ipr.get_addr(index=topo.dut.ifindex)}
        assert {"192.0.2.1", "2001:db8::1"} <= addrs


def test_two_topologies_at_once_do_not_meet(pktassert_ready):
    with Topology() as a, Topology() as b:
        # Same names and addresses in each: they are separate namespaces.
        assert (a.dut.ip, a.dut.ifname) == (b.dut.ip, b.dut.ifname)
        assert a.dut.ns.fd != b.dut.ns.fd
        assert subprocess.run(["nsenter", f"--net={a.peer.ns.path}", "ip", "-o", "link", "show", "peer0"],
                              capture_output=True, text=True).stdout.count("peer0") == 1


def test_a_failing_topology_build_leaves_nothing(pktassert_ready, monkeypatch):
    before = snapshot()
    # Force a failure halfway: the second namespace cannot be made.
    calls = []
    original = Topology._namespace

    def second_fails(self, role):
        calls.append(role)
        if role == "peer":
            raise OSError("injected failure")
        return original(self, role)

    monkeypatch.setattr(Topology, "_namespace", second_fails)
    with pytest.raises(OSError, match="injected failure"):
        Topology()
    assert calls == ["dut", "peer"]
    assert snapshot() == before


def test_a_whole_run_leaves_the_root_namespace_as_it_was(pktassert_ready, pytester):
    before = snapshot()
    pytester.makepyfile(test_user="""
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict
pytestmark = pytest.mark.xdp("int f(struct xdp_md *ctx) { return XDP_DROP; }", func="f")
def test_passes(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(), count=100).count(Verdict.DROP) == 100
def test_fails(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP()).verdict == Verdict.PASS
@pytest.fixture
def broken(xdp):
    raise RuntimeError("fixture error after attach")
def test_errors(broken):
    pass
""")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, failed=1, errors=1)
    assert snapshot() == before
