"""The device under test: a loaded filter attached to the DUT end of a topology."""

from __future__ import annotations

from typing import Any

from scapy.layers.l2 import Ether

from pktassert.bpf.program import LoadedProgram, Program
from pktassert.bpf.test_run import TestRunner
from pktassert.collect import Collector, Tally
from pktassert.frames import to_frames
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
        self._runner = TestRunner(loaded.fd)

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

    def run(self, packet: Any) -> "Run":
        """Run the program once on ``packet`` in the kernel (BPF_PROG_TEST_RUN), without traffic:
        its verdict and the frame as the program left it."""
        frame = to_frames(packet, self.peer, self.dut)
        if len(frame) != 1:
            raise ValueError(f"run() takes one packet; got {len(frame)}.")
        out = self._runner.run(frame[0])
        return Run(out.retval, out.data)

    def cost(self, packet: Any, repeat: int = 100_000) -> "Cost":
        """In-kernel nanoseconds per run of the program (inspector included) on ``packet``,
        from the kernel's own timing over ``repeat`` runs."""
        out = self._runner.run(to_frames(packet, self.peer, self.dut)[0], repeat=repeat)
        self.collector.discard()  # the repeated runs' records say nothing new
        return Cost(out.duration_ns, repeat)

    def __repr__(self) -> str:
        return f"<xdp {self.program.func}() from {self.program.name} on {self.ifname} {self.ip}>"


class Run:
    """One BPF_PROG_TEST_RUN: the verdict, and the packet as the program left it."""

    def __init__(self, retval: int, data: bytes) -> None:
        self.verdict: Verdict | int = Verdict(retval) if retval in Verdict._value2member_map_ else retval
        self.data = data

    @property
    def packet(self) -> Ether:
        return Ether(self.data)

    def __repr__(self) -> str:
        return f"<Run {Verdict.name_of(int(self.verdict))}: {self.packet.summary()}>"


class Cost:
    """What the kernel measured: mean nanoseconds per run over ``repeat`` runs."""

    def __init__(self, ns_per_packet: int, repeat: int) -> None:
        self.ns_per_packet, self.repeat = ns_per_packet, repeat

    def __repr__(self) -> str:
        return f"<Cost {self.ns_per_packet} ns per packet over {self.repeat} runs>"
