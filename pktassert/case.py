"""One case's pieces (a pytest test, or a Session's dut between two clear() calls), made as they are
asked for and closed in reverse: the namespaces, the filters under test with fresh state, the rule
set, the fate tracking and the injector. The one place they are composed: the pytest fixtures and
pktassert.Session both ask a Case for them (pktassert/session.py owns what cases share)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from pktassert.bpf import DIR as HERE
from pktassert.device.dut import XdpUnderTest
from pktassert.device.inject import Injector
from pktassert.instruments.tag_mover import TagMover
from pktassert.machine import host
from pktassert.netns import Topology
from pktassert.netns.topology_pool import TopologyPool
from pktassert.programs.libbpf_program import LibbpfSource
from pktassert.programs.nft_ruleset import RuleSet
from pktassert.programs.subjects import Subject

if TYPE_CHECKING:
    from pktassert.session import Session

TIERS = ("live", "unit")
# The DUT of a case without a filter of its own: an XDP stage that passes every frame, so the
# inspector still accounts for each one (bpf/pass_through.bpf.c).
PASS_THROUGH = LibbpfSource(HERE / "pass_through.bpf.c", "pass_through")


def topology(pool: TopologyPool, label: str) -> Topology:
    """A case's namespaces and veth; the kernel's refusal to make them is its configuration's lack."""
    try:
        return pool.take(label)
    except (NetlinkError, OSError) as e:
        code = e.code if isinstance(e, NetlinkError) else e.errno
        if code not in (errno.EOPNOTSUPP, errno.EINVAL):  # veth or network namespaces unknown to the kernel
            raise
        raise host.HostLacks("network namespaces and veth", f"the kernel refused pktassert's topology (two network "
                             f"namespaces and a veth pair): {e}. Fix: a kernel with CONFIG_NET_NS and CONFIG_VETH "
                             f"(modprobe veth on the host, where it is a module).") from None


class Case:
    """The pieces of one case, each made on first request; ``close()`` frees them, newest first."""

    def __init__(self, session: Session, label: str) -> None:
        self.session, self.label = session, label
        self._topology: Topology | None = None
        self._closers: list[Callable[[], None]] = []
        self.closed = False

    def topology(self) -> Topology:
        """The DUT and peer namespaces joined by a veth pair, made on first request."""
        if self._topology is None:
            pool = self.session.topologies
            self._topology = topology(pool, self.label)
            self._closers.append(lambda: pool.retire(self._topology) if self._topology else None)
        return self._topology

    def filter(self, program: Subject, tier: str, direction: str = "ingress", front: XdpUnderTest | None = None,
               mover: TagMover | None = None) -> XdpUnderTest:
        """``program`` with fresh state (maps as at load, counters at zero): in the live tier attached
        behind the inspector on the DUT's veth; in the unit tier loaded only, for the kernel's test runs."""
        programs = self.session.programs
        loaded, collector = programs.get(program)
        self._closers.append(lambda: programs.release(program))  # released, it may be closed to make room
        live = tier == "live"
        topo = self.topology() if live else None
        receiver = self.session.receiver() if live and front is None else None
        if live and loaded.hook.name == "xdp":
            self.session.xdp_anchor.hold(loaded.fd)
        if receiver is not None:
            self.session.xdp_anchor.hold(receiver.fd)
        dut = XdpUnderTest(loaded, collector, topo, receiver, direction, front, mover)
        self._closers.append(dut.close)
        if loaded.prints:
            dut.capture_prints(self.session.trace_pipe())
        return dut

    def tc(self, program: Subject, tier: str, direction: str,
           xdp: Callable[[], XdpUnderTest] | None = None) -> XdpUnderTest:
        """A tc classifier at ``direction``; ``xdp`` gives the case's XDP filter, if it has one."""
        front, mover = None, None
        if direction == "ingress":
            if xdp is not None:
                front = xdp()  # the case's XDP filter runs first, on the same veth
            elif tier == "live":  # the traffic engine delivers through an XDP program on the DUT
                mover = self.session.tag_mover()
                self.session.xdp_anchor.hold(mover.fd)
        return self.filter(program, tier, direction, front, mover)

    def rule_set(self, source: str | bytes | Path) -> RuleSet:
        """An nftables rule set loaded into the DUT namespace (live tier); it goes with the namespace."""
        return RuleSet(self.topology().dut.netns, source)

    def whole(self, tier: str, under: Callable[[], XdpUnderTest], rules: Callable[[], RuleSet] | None = None,
              fates: bool = True) -> XdpUnderTest:
        """The DUT as a whole: the filter ``under`` gives, the rule set ``rules`` gives, and in the live
        tier each injected packet's fate through the stack."""
        tracker = self.session.fate_tracker() if tier == "live" and fates else None  # first: a host without it loads nothing
        dut = under()
        if rules is not None:
            dut.nft = rules()
        if tracker is not None:
            dut.track_fates(tracker)
        return dut  # closed with the filter

    def injector(self, under: XdpUnderTest) -> Injector:
        """inject() for ``under``: floods in the live tier go through the session's traffic engine."""
        injector = Injector(under, self.session.sender)
        self._closers.append(injector.close)
        return injector

    def close(self) -> None:
        """Free every piece, the newest first; each is freed even when one before it failed."""
        self.closed = True
        failed: BaseException | None = None
        if self._topology is not None:  # first, its links down: nothing of this case reaches what the next one shares
            self._closers.append(self._topology.stop)
        while self._closers:
            try:
                self._closers.pop()()
            except BaseException as e:  # noqa: BLE001 -- the rest are freed first, then the first error is raised
                failed = failed or e
        self._topology = None
        self.session.forget(self)
        if failed is not None:
            raise failed
