"""The device under test: a loaded filter attached to the DUT end of a topology."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from scapy.layers.l2 import Ether

from pktassert.build.source_check import RESERVED
from pktassert.device.listeners import Listener, open_listeners
from pktassert.errors import InjectError, PktassertError
from pktassert.frames.convert import to_frames
from pktassert.frames.wire import Wire
from pktassert.hooks.verdict import Verdict
from pktassert.instruments.fate_tracker import FateTracker, netns_cookie
from pktassert.instruments.receiver import Receiver
from pktassert.instruments.tag_mover import TagMover
from pktassert.kernel.test_run import TestRunner, TestRunRefused
from pktassert.netns import UNIT_DUT, UNIT_PEER, Endpoint, Namespace, Topology
from pktassert.observers.collect import Collector, Tally
from pktassert.observers.nft_trace import Tracer
from pktassert.observers.printk import TracePipe, new_nonce
from pktassert.programs.events import Events, open_readers
from pktassert.programs.globals_view import Globals
from pktassert.programs.loaded import Loaded
from pktassert.programs.nft_ruleset import RuleSet
from pktassert.programs.state_map import StateMap
from pktassert.transports import veth
from pktassert.transports.unit import UnitPath, refusal


class XdpUnderTest:
    """What the ``xdp`` fixture gives a test: the DUT's addresses, the program's maps, exact counts.

    With a topology (live tier) the program is attached to the DUT's veth; without one (unit tier)
    it is only run by the kernel on frames handed to it.
    """

    def __init__(self, loaded: Loaded, collector: Collector, topology: Topology | None = None,
                 receiver: Receiver | None = None, direction: str = "ingress", front: XdpUnderTest | None = None,
                 mover: TagMover | None = None) -> None:
        self.loaded, self.collector, self._topology = loaded, collector, topology
        # Live tier: pktassert's receiver on the peer's end (and the honeypot's, once made), so that
        # frames the filter sends out arrive as on a real link and are captured.
        self.receiver = receiver if topology is not None else None
        # An XDP stage in front of this tc ingress filter: the test's XDP filter, or pktassert's tag
        # mover (bpf/tag_mover.c), which the traffic engine needs on the DUT to deliver frames.
        self.front, self.mover = front, mover
        if front is not None:
            self.receiver = front.receiver  # attached already, by the front
        self._map_ns: Namespace | None = None  # unit tier: where map writes resolve interface indexes
        self._honeypot: Honeypot | None = None
        self.hook, self.direction = loaded.hook, direction
        loaded.reset()
        collector.discard()
        # Before any packet: a perf event array keeps nothing for a reader that is not there yet.
        self._events: dict[str, Events] = open_readers(loaded.map_fds())
        if topology is not None:
            dut = topology.dut
            if mover is not None:
                mover.attach(dut.netns, dut.ifindex, dut.ifname)
            self.hook.attach(dut.netns.ipr, dut.ifindex, loaded.fd, direction)  # inside the DUT netns
            if self.receiver is not None and front is None:
                self.receiver.clear()
                self.receiver.attach(topology.peer.netns, topology.peer.ifindex)
        self._start = collector.tally()
        self._unit = UnitPath(loaded, direction)
        self.fates: FateTracker | None = None  # the whole stack's view (the dut fixture), live tier
        self._listeners: list[Listener] = []
        self._sockets: list[socket.socket] = []  # dut.socket(): the test's own, closed with the DUT
        self.nft: RuleSet | None = None  # the test's nftables rule set (@pytest.mark.nftables)
        self.printk: tuple[TracePipe, int] | None = None  # a filter that prints: where its lines arrive, our nonce
        self._tracer: Tracer | None = None
        # Each packet's deciding rule and connection state (with a rule set); off: floods go faster
        # without them (benchmarks/stateful.py), and a packet's rule is then refused with why.
        self.tracing = True

    def track_fates(self, tracker: FateTracker) -> None:
        """From now on, say what became of each injected packet after the filters (live tier)."""
        dut = self.topology.dut
        # The whole stack answers as a host behind a router does: to any source, through the peer.
        # (Only here: the filter-only fixtures keep a DUT that cannot answer spoofed sources, so a
        # flood is not slowed by a million answers.)
        self.topology.route_via_peer()
        with contextlib.closing(dut.netns.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
            tracker.watch(netns_cookie(s), dut.ifindex)
        self.fates = tracker

    def listen(self, tcp: int | Iterable[int] | None = None, udp: int | Iterable[int] | None = None,
               raw: int | Iterable[int] | None = None, backlog: int = 4096) -> Listener | list[Listener]:
        """Open real sockets in the DUT namespace: TCP listening on ports, UDP bound to ports, raw for
        IP protocol numbers (IPv4 and IPv6 on one socket, raw IPv4). Each packet's fate then says
        which one took it (``capture[i].socket`` is its cookie, ``dut.listener(cookie)``)."""
        if self.fates is None:
            raise PktassertError("dut.listen(): sockets and fates are for the `dut` fixture in the live tier. Fix: ask "
                                 "for `dut` in the test's arguments"
                                 + (", and run the test live." if self.tier == "unit" else "."))
        opened = open_listeners(self.topology.dut.netns, self.fates, backlog, tcp=tcp, udp=udp, raw=raw)
        if not opened:
            raise PktassertError("dut.listen(): nothing to open. Fix: tcp=22, udp=[53, 123] or raw=1.")
        self._listeners += opened
        return opened[0] if len(opened) == 1 else opened

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        """A socket of the test's in the DUT namespace, for the DUT's own connections and datagrams, with
        pktassert's delivery filter on it: a reply it takes is DELIVERED (``capture[i].socket`` is its
        SO_COOKIE). Closed with the DUT."""
        if self.fates is None:
            raise PktassertError("dut.socket(): sockets and fates are for the `dut` fixture in the live tier. Fix: "
                                 "ask for `dut` in the test's arguments"
                                 + (", and run the test live." if self.tier == "unit" else "."))
        sock = self.topology.dut.netns.socket(family, kind, proto)
        self.fates.attach_socket(sock)  # before it is bound or connected: no packet reaches it unfiltered
        self._sockets.append(sock)
        return sock

    def nft_tracer(self) -> Tracer | None:
        """nftables tracing of the rule set under test (made on first use), or None without one."""
        if self.nft is not None and self._tracer is None and self.fates is not None:
            dut = self.topology.dut
            self._tracer = Tracer(dut.netns, self.nft, dut.ifname, self.fates)
        return self._tracer

    def capture_prints(self, pipe: TracePipe) -> None:
        """The filter prints (bpf_printk): tie its lines to packets from now on (a nonce of this test's)."""
        nonce = new_nonce()
        self.loaded.mark_prints(nonce)
        pipe.take(0)  # what earlier tests left in the pipe
        self.printk = (pipe, nonce)

    @property
    def unit_path(self) -> UnitPath:
        """The filter's test runs (BPF_PROG_TEST_RUN), whatever tier the DUT is in."""
        return self._unit

    def listener(self, cookie: int | None) -> Listener | None:
        """The test socket with this cookie (a packet's ``.socket``), or None."""
        return next((lst for lst in self._listeners if lst.cookie == cookie), None)

    @property
    def tier(self) -> str:
        """"live" (attached to a veth, traffic injected) or "unit" (BPF_PROG_TEST_RUN only)."""
        return "unit" if self._topology is None else "live"

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            raise PktassertError("this test runs in the unit tier (BPF_PROG_TEST_RUN): there are no namespaces "
                                 "or veth. Fix: run it in the live tier: "
                                 "@pytest.mark.parametrize(\"tier\", [\"live\"], indirect=True).")
        return self._topology

    @property
    def program(self) -> Any:
        """What is under test: a BccSource, LibbpfSource or ObjectFile."""
        return self.loaded.program

    @property
    def dut(self) -> Endpoint:
        return UNIT_DUT if self._topology is None else self._topology.dut

    @property
    def peer(self) -> Endpoint:
        """The namespace and interface packets are injected from (no namespace in the unit tier)."""
        return UNIT_PEER if self._topology is None else self._topology.peer

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
    def maps(self) -> dict[str, StateMap]:
        """The filter's state maps by name (emptied before each test), to read or seed."""
        return {name: self._state_map(name, table) for name, table in self.loaded.state_maps().items()}

    def map(self, name: str) -> StateMap:
        """One of the filter's maps by name (any type): ``xdp.map("blocked_ports")[8080] = 1``.
        A program array takes function names of the same source: ``xdp.map("jmp")[0] = "parse_tcp"``."""
        if name.startswith(RESERVED):
            raise KeyError(f"{name!r} is pktassert's own map, not the filter's")
        tables = self.loaded.state_maps()
        if name not in tables:
            raise KeyError(f"{self.program.name} has no map {name!r}; its maps: {', '.join(tables) or 'none'}")
        return self._state_map(name, tables[name])

    @property
    def globals(self) -> Globals:
        """The filter's global variables (libbpf objects): ``xdp.globals["limit"]``; .data and .bss
        are writable, and reset with the maps before each test; .rodata is set by the marker's globals=."""
        return Globals(self.loaded)

    def events(self, name: str) -> Events:
        """The filter's ring buffer or perf event array ``name``: ``xdp.events("events").read()``."""
        if name not in self._events:
            fds = self.loaded.map_fds()
            if name not in fds:
                raise KeyError(f"{self.program.name} has no map {name!r}; its maps: {', '.join(fds) or 'none'}")
            self._events[name] = Events(name, fds[name])
        return self._events[name]

    def _state_map(self, name: str, table: Any) -> StateMap:
        return StateMap(name, table, self._writing, self.loaded.program_fd)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Map writes run inside the DUT's namespace: the kernel resolves the interface indexes in
        devmap entries in the writer's namespace, and the root namespace's must never be bound."""
        if self._topology is not None:
            ns = self._topology.dut.ns
        else:
            if self._map_ns is None:  # the unit tier has no DUT namespace: a throwaway one
                self._map_ns = Namespace("pktassert unit-tier map writes")
            ns = self._map_ns
        assert ns is not None
        with ns.entered():
            yield

    @property
    def honeypot(self) -> Honeypot:
        """A third namespace the filter can redirect to (live tier), made on first use: put
        ``xdp.honeypot.ifindex`` (its port in the DUT namespace) in a devmap; read what arrived
        with ``xdp.honeypot.received()``."""
        topo = self.topology
        if self._honeypot is None:
            far = topo.honeypot
            assert far.ns is not None and self.receiver is not None
            self.receiver.attach(far.ns, far.ifindex)
            self._honeypot = Honeypot(topo.honeypot_port.ifindex, far, self.receiver)
        return self._honeypot

    def landings(self) -> dict[int, str]:
        """The receiver's interfaces by ifindex (each in its own namespace): where output frames land."""
        places = {self.topology.peer.ifindex: "peer"}
        if self._honeypot is not None:
            places[self._honeypot.endpoint.ifindex] = "honeypot"
        return places

    def received_by_peer(self) -> list[Ether]:
        """Every frame that arrived at the peer since the test started (TX'd by the filter, or sent
        by the DUT's stack), in arrival order (the first frames whose bytes the receiver keeps)."""
        peer = self.topology.peer  # in the unit tier: the error that says there is no topology, and why
        assert self.receiver is not None
        return [Ether(f.data[:f.length]) for f in self.receiver.frames(peer.ifindex)]

    def close(self) -> None:
        for reader in self._events.values():
            reader.close()
        for sock in self._sockets:
            sock.close()
        for listener in self._listeners:
            listener.close()
        if self._tracer is not None:
            self._tracer.close()
        if self.fates is not None:
            self.fates.unwatch()
        if self.printk is not None:
            self.loaded.mark_prints(0)
            self.printk = None
        if self.receiver is not None and self.front is None:
            self.receiver.detach()
        if self.mover is not None:
            self.mover.detach()
        if self._map_ns is not None:
            self._map_ns.close()
            self._map_ns = None

    def tally(self) -> Tally:
        return self.collector.tally()

    def counts(self) -> dict[Any, int]:
        """Exact frames pktassert gave the filter (inject() and run()), per verdict, since the test started."""
        return (self.collector.tally() - self._start).injected

    def stray_counts(self) -> dict[Any, int]:
        """Frames the filter judged that pktassert did not send (the stacks' own traffic: replies,
        RSTs), per verdict, since the test started. Never part of counts() or a Capture."""
        return (self.collector.tally() - self._start).stray

    def link_mtu(self) -> int:
        """The DUT link's MTU now (a test may change it)."""
        return veth.link_mtu(self.topology.dut)

    def frame_limit(self) -> int:
        """The longest frame as crafted that the DUT's veth lets through now: MTU plus Ethernet
        header plus one VLAN tag (the kernel's is_skb_forwardable), less pktassert's trailer."""
        return veth.frame_limit(self.topology.dut)

    def too_long(self, wire: Wire) -> tuple[np.ndarray, int]:
        """Which frames of ``wire`` the DUT's veth would drop for their length now, and the limit."""
        return veth.too_long(self.topology.dut, wire)

    def run(self, packet: Any) -> Run:
        """Run the program once on ``packet`` in the kernel (BPF_PROG_TEST_RUN), in either tier,
        without traffic: its verdict and the whole frame as the program left it."""
        frames = to_frames(packet, self.peer, self.dut)
        if len(frames) != 1:
            raise InjectError(f"run() takes one packet; got {len(frames)}. Fix: inject() takes many.")
        wire = Wire.build(frames, self._unit.magic, self.loaded.take_tags(1))
        part = self._unit.send(wire, 0, 1, stride=TestRunner.MAX_FRAME)
        assert part.outputs is not None
        return Run(int(part.records["ret"][0]), part.outputs[0], self.loaded.actions)

    def cost(self, packet: Any, repeat: int = 100_000) -> Cost:
        """In-kernel nanoseconds per run of the filter alone (without our inspector) on ``packet``,
        from the kernel's own timing over ``repeat`` runs. The runs change the filter's state
        as that many packets would."""
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise InjectError(f"cost(repeat={repeat!r}): give how many runs to time, a whole number from 1.")
        frames = to_frames(packet, self.peer, self.dut)
        if len(frames) != 1:
            raise InjectError(f"cost() times one packet; got {len(frames)}.")
        frame = self._unit.as_seen(frames[0])
        runner = self.loaded.bare_runner
        try:
            out = runner.run(frame, repeat=repeat)
        except TestRunRefused as e:
            raise InjectError(refusal("the packet", frame, runner.hook, e.err, None, runner.max_len(), tag=0,
                                      live=False)) from None
        return Cost(out.duration_ns, repeat)

    def __repr__(self) -> str:
        return f"<xdp {self.program.func}() from {self.program.name} on {self.ifname} {self.ip}>"


class Honeypot:
    """Where a filter can redirect frames for further analysis: a veth whose port in the DUT
    namespace has ``ifindex`` and whose far end, ``endpoint``, is in a namespace of its own."""

    def __init__(self, ifindex: int, endpoint: Endpoint, receiver: Receiver) -> None:
        self.ifindex, self.endpoint, self._receiver = ifindex, endpoint, receiver

    def received(self) -> list[Ether]:
        """The frames that arrived, in arrival order."""
        return [Ether(f.data[:f.length]) for f in self._receiver.frames(self.endpoint.ifindex)]

    def __repr__(self) -> str:
        return f"<honeypot: ifindex {self.ifindex} in the DUT namespace>"


class Run:
    """One BPF_PROG_TEST_RUN: the verdict, and the packet as the program left it."""

    def __init__(self, ret: int, data: bytes, actions: Any = Verdict) -> None:
        self.actions = actions
        self.verdict = actions.of(ret)  # the action the kernel takes
        self.ret = ret                  # what the filter returned
        self.data = data

    @property
    def packet(self) -> Ether:
        return Ether(self.data)

    def __repr__(self) -> str:
        return f"<Run {self.actions.name_of(self.ret)}: {self.packet.summary()}>"


class Cost:
    """What the kernel measured: mean nanoseconds per run over ``repeat`` runs."""

    def __init__(self, ns_per_packet: int, repeat: int) -> None:
        self.ns_per_packet, self.repeat = ns_per_packet, repeat

    def __repr__(self) -> str:
        return f"<Cost {self.ns_per_packet} ns per packet over {self.repeat} runs>"
