"""The device under test: a loaded filter attached to the DUT end of a topology."""

from __future__ import annotations

from typing import Any

from pktassert.bpf.program import LoadedProgram, Program
from pktassert.collect import Collector, Tally
from pktassert.netns import Endpoint, Topology
from pktassert.verdict import Verdict


class XdpUnderTest:
    """What the ``xdp`` fixture gives a test: the DUT's addresses, the program's maps, exact counts."""

    def __init__(self, topology: Topology, loaded: LoadedProgram, collector: Collector) -> None:
        self.topology, self.loaded, self.collector = topology, loaded, collector
        loaded.reset()
        collector.discard()
        ipr = topology.dut.ns.ipr
        ipr.link("set", index=topology.dut.ifindex, xdp_fd=loaded.fd)  # native XDP, inside the DUT netns
        self._start = collector.tally()

    @property
    def program(self) -> Program:
        return self.loaded.program

    @property
    def dut(self) -> Endpoint:
        return self.topology.dut

    @property
    def peer(self) -> Endpoint:
        """The namespace and interface packets are injected from."""
        return self.topology.peer

    @property
    def ip(self) -> str:
        return self.dut.ip

    @property
    def ip6(self) -> str:
        return self.dut.ip6

    @property
    def mac(self) -> str:
        return self.dut.mac

    @property
    def ifname(self) -> str:
        return self.dut.ifname

    @property
    def ifindex(self) -> int:
        return self.dut.ifindex

    @property
    def maps(self) -> dict[str, Any]:
        """The filter's state maps (bcc tables) by name, to read or seed."""
        return self.loaded.state_maps()

    def map(self, name: str) -> Any:
        """One of the filter's maps by name (any type), as a bcc table."""
        return self.loaded.bpf[name.encode()]

    def tally(self) -> Tally:
        return self.collector.tally()

    def counts(self) -> dict[Verdict, int]:
        """Exact frames per verdict since the test started (from the per-CPU counter map)."""
        now = self.collector.tally().verdicts - self._start.verdicts
        return {v: int(now[v]) for v in Verdict}

    def __repr__(self) -> str:
        return f"<xdp {self.program.func}() from {self.program.name} on {self.ifname} {self.ip}>"
