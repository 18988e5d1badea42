"""Live tests stay isolated now that topologies are made ahead on a background thread, used ones are
stopped (links down) and closed there later, and our XDP programs stay in the kernel's dispatcher
(pktassert/netns/topology_pool.py, pktassert/kernel/xdp_anchor.py): a test that dirties every kind of
state, and a next test that sees none of it, not even frames sent afterwards from the first one's
namespaces (kept alive on purpose)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno

from pktassert.kernel import libbpf
from pktassert.kernel.xdp_anchor import XdpAnchor, prog_id
from pktassert.netns import Namespace
from pktassert.netns.topology_pool import TopologyPool, drain

DIRTY_THEN_CLEAN = r'''
import os, socket, subprocess
import pytest
from pktassert import Verdict
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

FILTER = """
BPF_HASH(seen, __u32, __u64, 64);
int count(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 one = 1, *v = seen.lookup(&k);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		seen.update(&k, &one);
	return XDP_PASS;
}
"""
pytestmark = pytest.mark.xdp(FILTER, func="count")
LEFT = {}  # what the first test leaves open: its namespaces stay alive, with a way to send from each


def ns(dut):
    return dut.topology.dut.netns


def _nft(where, *args):
    return subprocess.run(["nsenter", "--net=" + where.path, "nft", *args], capture_output=True, text=True, check=True).stdout


def test_1_dirties_everything(xdp, inject):
    dut = xdp  # the filter alone: no fate tracker, so no kernel BTF needed
    inject(IP(dst=dut.ip) / UDP(dport=9))
    ipr = ns(dut).ipr
    ipr.tc("add", "ingress", dut.ifindex)                                       # a qdisc
    _nft(ns(dut), "add", "table", "inet", "dirty")                               # a rule set
    listener = ns(dut).socket(socket.AF_INET, socket.SOCK_STREAM)                # a socket, never closed
    listener.bind(("0.0.0.0", 8080)); listener.listen()
    ipr.neigh("add", dst="192.0.2.77", lladdr="02:00:5e:00:53:77", ifindex=dut.ifindex, state="permanent")
    ns(dut).sysctl("net.ipv4.ip_forward", 1)                                     # a sysctl
    ipr.route("add", dst="198.51.100.0/24", gateway="192.0.2.2")                # a route
    LEFT.update(listener=listener, inodes=(os.stat(ns(dut).path).st_ino,),
                dut_raw=ns(dut).socket(socket.AF_PACKET, socket.SOCK_RAW, 0), dut_if=dut.ifname,
                peer_raw=dut.topology.peer.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    assert dut.map("seen")[0] == 1


def _send_from_old(kind, ifname, frame):
    try:
        LEFT[kind].sendto(bytes(frame), (ifname, 0))
        return "sent"
    except OSError as e:  # ENETDOWN: the used topology's links are down, as they must be
        return os.strerror(e.errno)


def test_2_sees_none_of_it(xdp, inject):
    dut = xdp
    assert os.stat(ns(dut).path).st_ino not in LEFT["inodes"]
    assert len(dut.map("seen")) == 0
    assert "ingress" not in [q.get_attr("TCA_KIND") for q in ns(dut).ipr.get_qdiscs(index=dut.ifindex)]
    assert _nft(ns(dut), "list", "ruleset").strip() == ""
    fresh = ns(dut).socket(socket.AF_INET, socket.SOCK_STREAM)
    fresh.bind(("0.0.0.0", 8080)); fresh.close()                               # nothing holds the port here
    assert not ns(dut).ipr.get_neighbours(dst="192.0.2.77")
    assert subprocess.run(["nsenter", "--net=" + ns(dut).path, "sysctl", "-n", "net.ipv4.ip_forward"],
                          capture_output=True, text=True).stdout.strip() == "0"
    assert not [r for r in ns(dut).ipr.get_routes() if (r.get_attr("RTA_DST"), r["dst_len"]) == ("198.51.100.0", 24)]
    # Frames from the first test's namespaces, which our sockets keep alive: towards its DUT (where the
    # shared filter was attached) and towards its peer (where the shared receiver was).
    frame = (Ether(src="02:00:5e:00:53:02", dst="02:00:5e:00:53:01") / IP(src="192.0.2.2", dst="192.0.2.1")
             / UDP(dport=7) / b"OLDNS")
    said = [_send_from_old("peer_raw", "peer0", frame), _send_from_old("dut_raw", LEFT["dut_if"], frame)]
    capture = inject(IP(dst=dut.ip) / UDP(dport=9))  # after them: the rings are read up to here
    assert capture.verdict == Verdict.PASS
    assert dut.map("seen")[0] == 1, said             # only this test's packet reached the filter
    assert sum(dut.stray_counts().values()) == 0, said
    assert not [f for f in dut.received_by_peer() if b"OLDNS" in bytes(f)], said
    print("old sends:", said)
'''


def test_a_next_test_sees_nothing_of_the_one_before(pytester, pktassert_ready):
    pytester.makepyfile(test_order=DIRTY_THEN_CLEAN)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-s")
    res.assert_outcomes(passed=2)
    assert "old sends: ['Network is down', 'Network is down']" in res.stdout.str()  # both links down


def test_ipr_used_from_another_thread_acts_in_its_namespace(pktassert_ready):
    """pyroute2 (0.9) opens a netlink socket per thread, in whatever namespace that thread is in: a
    namespace made on a background thread and used here must still act inside itself."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ns = pool.submit(Namespace, "made on another thread").result()
    try:
        names = [link.get_attr("IFLA_IFNAME") for link in ns.ipr.get_links()]
        assert names == ["lo"], names  # not the root namespace's interfaces
    finally:
        ns.close()


def test_pool_gives_fresh_topologies_and_closes_the_one_made_ahead(pktassert_ready):
    import os

    pool = TopologyPool(mtu=1500)
    seen = set()
    for _ in range(3):
        topo = pool.take("case")
        inode = os.fstat(topo.dut.netns.fd).st_ino
        assert inode not in seen
        seen.add(inode)
        assert topo.dut.netns.ipr.get_links(index=topo.dut.ifindex)[0].get_attr("IFLA_OPERSTATE") == "UP"
        pool.retire(topo)
        assert topo.stopped
    ahead = pool._next
    pool.close()
    assert ahead is not None and ahead.result().dut.ns is not None and ahead.result().dut.ns.fd == -1
    drain()


def _prog_exists(pid: int) -> bool:
    fd = libbpf.lib().bpf_prog_get_fd_by_id(pid)
    if fd >= 0:
        import os

        os.close(fd)
        return True
    assert ctypes.get_errno() == errno.ENOENT
    return False


def test_anchor_holds_a_program_until_released(pktassert_ready):
    from bcc import BPF

    bpf = BPF(text=b"int p(struct xdp_md *ctx) { return XDP_PASS; }")
    fd = bpf.load_func(b"p", BPF.XDP).fd
    pid = prog_id(fd)
    anchor = XdpAnchor()
    try:
        assert anchor.hold(fd)
        assert anchor.hold(fd)  # once is enough
        bpf.cleanup()    # the loader's fd closed: the anchor's attachment keeps the program
        assert _prog_exists(pid)
    finally:
        anchor.close()


def test_anchor_lets_an_evicted_program_go(pktassert_ready):
    from pktassert.device.program_cache import ProgramCache
    from pktassert.programs.bcc_program import Program

    anchor = XdpAnchor()
    cache = ProgramCache(keep=1, on_close=anchor.release)
    try:
        a = Program("int a(struct xdp_md *ctx) { return XDP_PASS; }", "a")
        loaded, _ = cache.get(a)
        assert anchor.hold(loaded.fd)
        pid = prog_id(loaded.fd)
        cache.release(a)
        cache.get(Program("int b(struct xdp_md *ctx) { return XDP_DROP; }", "b"))  # evicts a
        assert not _prog_exists(pid)
    finally:
        cache.close()
        anchor.close()
