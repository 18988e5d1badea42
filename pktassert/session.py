"""pktassert without pytest: a Session owns what a run shares (pktassert's own programs, made on first
use, and the loaded filters) and composes devices under test through pktassert/case.py, the same
composition the pytest fixtures ask for (pktassert/plugin.py holds one Session per pytest process).

    with pktassert.Session() as s:
        dut = s.dut(xdp=pktassert.LibbpfSource("f.bpf.c", "xdp_prog"), nftables="rules.nft")
        assert dut.inject(IP(dst=dut.ip) / TCP(dport=23)).verdict == pktassert.Verdict.DROP
        dut.clear()  # the next case starts afresh
"""

from __future__ import annotations

import dataclasses
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from pktassert.case import PASS_THROUGH, TIERS, Case
from pktassert.device.dut import XdpUnderTest
from pktassert.device.inject import MTU, Injector
from pktassert.device.program_cache import ProgramCache, raise_fd_limit
from pktassert.errors import HostLacks, PktassertError
from pktassert.hooks.table import HOOKS
from pktassert.instruments.fate_tracker import FateTracker
from pktassert.instruments.receiver import Receiver
from pktassert.instruments.record import const
from pktassert.instruments.sender import Sender
from pktassert.instruments.tag_mover import TagMover
from pktassert.kernel.xdp_anchor import XdpAnchor
from pktassert.machine import preflight
from pktassert.netns import Namespace, Topology
from pktassert.netns.topology_pool import TopologyPool
from pktassert.observers.printk import TracePipe
from pktassert.programs.bcc_program import looks_like_path
from pktassert.programs.subjects import SUBJECTS, Subject

T = TypeVar("T")
KINDS = "pktassert.LibbpfSource(path, func), ObjectFile(path, func) or BccSource(path, func)"


class OnFirstUse(Generic[T]):
    """A session's one instance of an expensive helper (a compiled program of ours), made the first
    time a case needs it; its close() is noted in ``made`` then, for the session to call."""

    def __init__(self, make: Callable[[], T], made: list[Callable[[], None]] | None = None) -> None:
        self._make, self._log = make, made
        self._made: list[T] = []

    def __call__(self) -> T:
        if not self._made:
            self._made.append(self._make())
            if self._log is not None:
                self._log.append(self.close)
        return self._made[0]

    def close(self) -> None:
        while self._made:
            self._made.pop().close()  # type: ignore[attr-defined]  # every helper of ours has close()


class Session:
    """The engine without pytest: ``dut(...)`` gives a device under test (one open at a time);
    ``close()`` (or the end of a ``with`` block) frees everything the session made, newest first.
    ``tier``: where duts run by default, "live" (namespaces and a veth) or "unit" (the kernel's test
    runs, no traffic). Needs root, as the pytest plugin does."""

    def __init__(self, tier: str = "live") -> None:
        self.tier = _tier(tier, "Session(tier=...)")
        found = preflight.problems()
        if found:
            raise HostLacks("a host for pktassert", "pktassert cannot run here: " + " | ".join(found))
        self._closers: list[Callable[[], None]] = []  # what was made, in order
        self._cases: list[Case] = []  # open ones
        self._programs: ProgramCache | None = None
        self.closed = False
        self.receiver = OnFirstUse(Receiver, self._closers)      # on the peer: frames the DUT sends out
        self.tag_mover = OnFirstUse(TagMover, self._closers)     # XDP in front of a tc ingress filter alone
        self.sender = OnFirstUse(Sender, self._closers)          # the traffic engine (floods)
        self.trace_pipe = OnFirstUse(TracePipe, self._closers)   # bpf_printk lines of filters that print
        self.fate_tracker = OnFirstUse(FateTracker, self._closers)  # each packet's fate through the stack
        self.topologies = TopologyPool(MTU + const("TRAILER_LEN"))  # live cases' namespaces, made one ahead
        self.xdp_anchor = XdpAnchor()  # keeps our XDP programs in the kernel's dispatcher: attaches without a grace period

    @property
    def programs(self) -> ProgramCache:
        """The loaded filters, kept for the session (the most recently used few)."""
        self._check_open("Session.programs")
        if self._programs is None:
            limits = raise_fd_limit()  # programs and maps take fds; restored at close
            self._closers.append(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits))
            self._programs = ProgramCache(on_close=self.xdp_anchor.release)
            self._closers.append(self._programs.close)
        return self._programs

    def case(self, label: str) -> Case:
        """An empty case whose pieces are made as asked (the fixtures' way in); closed by its maker."""
        self._check_open("Session.case()")
        case = Case(self, label)
        self._cases.append(case)
        return case

    def forget(self, case: Case) -> None:
        """``case`` closed itself: no longer the session's to close."""
        if case in self._cases:
            self._cases.remove(case)

    def dut(self, xdp: Subject | None = None, tc: Subject | None = None, nftables: str | bytes | os.PathLike[str] | None = None,
            *, direction: str | None = None, fates: bool = True, tier: str | None = None,
            label: str = "pktassert.Session") -> Dut:
        """A device under test, as the pytest fixtures compose one: ``xdp=`` and/or ``tc=`` (a
        LibbpfSource, ObjectFile or BccSource; a tc filter at ``direction`` "ingress" or "egress"),
        ``nftables=`` (a .nft path or the rule set text), and in the live tier each packet's fate
        through the DUT's stack (``fates=False``: verdicts only). Without a filter the DUT runs
        pktassert's pass-through XDP stage, so the stack or the rule set is what is tested.
        ``tier``: this dut's, else the session's; ``label``: on its namespaces (what pktassert-cleanup lists)."""
        self._check_open("Session.dut()")
        if self._cases:  # its receiver, fate tracker and loaded programs serve one case at a time, as in pytest
            raise PktassertError("Session.dut(): this session's other dut is still open, and a session tests one DUT at "
                                 "a time (as pytest runs one test at a time: pktassert's receiver, fate tracker and "
                                 "the loaded filters serve one case). Fix: close() the other first, or clear() it to "
                                 "reuse it for the next case; for two DUTs at once, a Session each.")
        args = _Args(_subject(xdp, "xdp"), _subject(tc, "tc"), _rules(nftables), direction, fates,
                     _tier(self.tier if tier is None else tier, "Session.dut(tier=...)"), label)
        return Dut(self, _checked(args))

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise PktassertError(f"{what}: this Session is closed. Fix: call it inside the `with pktassert.Session()` "
                                 f"block, or make a new Session.")

    def close(self) -> None:
        """Free every case still open, then every piece, the newest first."""
        if self.closed:
            return
        self.closed = True
        failed: BaseException | None = None
        # The anchor before the programs it holds: dropping its namespace lets the kernel detach them all
        # later, where releasing each would wait a grace period.
        firsts = [c.close for c in reversed(self._cases)] + [self.topologies.close, self.xdp_anchor.close]
        for close in firsts + list(reversed(self._closers)):
            try:
                close()
            except BaseException as e:  # noqa: BLE001 -- the rest are freed first, then the first error is raised
                failed = failed or e
        self._cases.clear()
        self._closers.clear()
        if failed is not None:
            raise failed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class _Args:
    xdp: Subject | None
    tc: Subject | None
    nftables: str | bytes | Path | None
    direction: str | None
    fates: bool
    tier: str
    label: str


class Dut:
    """A device under test made by ``Session.dut()``: what the ``dut`` fixture is, plus ``inject``
    (the ``inject`` fixture: ``dut.inject(packets, count=1, vary=None) -> Capture``, ``.from_dut()``,
    ``.pcap()``), ``clear()`` and ``close()``. ``xdp`` and ``tc`` are its filters (None if it has
    none); every other attribute is the filter inject() goes to: ``ip``, ``ns``, ``map(name)``, ``maps``,
    ``counts()``, ``globals``, ``listen()``, ``nft``, ``run()``, ``cost()``, ``received_by_peer()``, ..."""

    def __init__(self, session: Session, args: _Args) -> None:
        self._session, self._args = session, args
        self._case: Case | None = None
        self._compose()

    def _compose(self) -> None:
        a, case = self._args, self._session.case(self._args.label)
        stages: dict[str, XdpUnderTest] = {}

        def xdp() -> XdpUnderTest:
            if "xdp" not in stages:
                assert a.xdp is not None
                stages["xdp"] = case.filter(a.xdp, a.tier)
            return stages["xdp"]

        def under() -> XdpUnderTest:  # as the dut fixture chooses: tc, else XDP, else the pass-through
            if a.xdp is not None:
                xdp()  # attached first, as a test asking for both the xdp and the tc fixture has it
            if a.tc is not None:
                stages["tc"] = case.tc(a.tc, a.tier, a.direction or "ingress", xdp if a.xdp is not None else None)
                return stages["tc"]
            return xdp() if a.xdp is not None else case.filter(PASS_THROUGH, a.tier)

        try:
            rules = None if a.nftables is None else (lambda: case.rule_set(a.nftables))  # type: ignore[arg-type]
            self._under = case.whole(a.tier, under, rules, a.fates)
            self._injector = case.injector(self._under)
        except BaseException:
            case.close()
            raise
        self._case, self._stages = case, stages

    @property
    def inject(self) -> Injector:
        """The inject fixture's object: ``dut.inject(packets, count=1, vary=None, ...) -> Capture``.
        A new one after clear(): take it from ``dut.inject`` each time."""
        self._open("inject")
        return self._injector

    @property
    def xdp(self) -> XdpUnderTest | None:
        self._open("xdp")
        return self._stages.get("xdp")

    @property
    def tc(self) -> XdpUnderTest | None:
        self._open("tc")
        return self._stages.get("tc")

    @property
    def filter(self) -> XdpUnderTest:
        """The filter inject() goes to first-hand: the tc filter, else the XDP one, else the pass-through."""
        self._open("filter")
        return self._under

    @property
    def tier(self) -> str:
        return self._args.tier

    @property
    def topology(self) -> Topology:
        """The DUT and peer namespaces and their veth (live tier)."""
        self._open("topology")
        if self.tier == "unit":
            raise PktassertError("this dut runs in the unit tier (BPF_PROG_TEST_RUN): it has no namespaces or veth. "
                                 "Fix: Session.dut(..., tier=\"live\").")
        return self._under.topology

    @property
    def ns(self) -> Namespace:
        """The DUT's network namespace (live tier): ``dut.ns.popen([...])``, ``with dut.ns.entered(): ...``."""
        return self.topology.dut.netns

    def clear(self) -> None:
        """Fresh state for the next case, as pytest gives each test: the filters' maps and globals as
        at load and their counters at zero (the programs stay loaded: nothing is compiled or loaded
        again), no captures. In the live tier this rebuilds the namespaces (~50 ms): a case can change
        anything in them (rules, conntrack, sockets, routes, the MTU), and only new ones are surely as
        new; the rule set is loaded afresh. Take ``dut.inject`` anew after it (a new injector)."""
        self._open("clear()")
        assert self._case is not None
        case, self._case = self._case, None
        case.close()
        self._compose()

    def close(self) -> None:
        """Free this dut's namespaces and attachments (the session keeps the loaded programs)."""
        case, self._case = self._case, None
        if case is not None and not case.closed:
            case.close()

    def _open(self, what: str) -> None:
        if self._case is None or self._case.closed:
            raise PktassertError(f"dut.{what}: this dut is closed (or its session is). Fix: use it before "
                                 f"dut.close() and inside the `with pktassert.Session()` block.")

    @property
    def tracing(self) -> bool:
        """Each packet's deciding rule (a DUT with a rule set); set False for floods that need no rules."""
        self._open("tracing")
        return bool(self._under.tracing)

    @tracing.setter
    def tracing(self, on: bool) -> None:  # the one attribute written through to the filter, not kept here
        self._open("tracing")
        self._under.tracing = on

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a failed composition), or private: never the filter's
            raise AttributeError(name)
        self._open(name)
        return getattr(self._under, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = ", ".join(f"{k}={getattr(self._args, k).func}" for k in ("xdp", "tc") if getattr(self._args, k))
        return f"<pktassert dut ({what or 'pass-through'}{', nftables' if self._args.nftables is not None else ''}, " \
               f"{self.tier} tier{'' if self._case else ', closed'})>"


def _tier(tier: object, where: str) -> str:
    if tier not in TIERS:
        raise PktassertError(f"{where}: tier={tier!r}. Fix: \"live\" (namespaces, a veth, real traffic) or \"unit\" "
                             f"(the kernel's test runs, no traffic).")
    return str(tier)


def _subject(value: object, hook: str) -> Subject | None:
    if value is None:
        return None
    if not isinstance(value, SUBJECTS):
        raise PktassertError(f"Session.dut({hook}={value!r}): a {type(value).__name__}, not a filter. Fix: {hook}={KINDS}.")
    if value.hook == hook:
        return value
    if hook == "tc":  # made with the default hook: tc= says where it goes
        return dataclasses.replace(value, hook="tc")  # type: ignore[type-var]
    raise PktassertError(f"Session.dut(xdp=...) got {value.func} of {value.name} made with hook={value.hook!r}. "
                         f"Fix: give it as tc=..., or drop hook=.")


def _rules(value: object) -> str | bytes | Path | None:
    """A rule set: a file (relative to the current folder) or its text."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, os.PathLike) or (isinstance(value, str) and looks_like_path(value)):
        path = Path(value)  # type: ignore[arg-type]
        if not path.exists():
            raise PktassertError(f"Session.dut(nftables={str(value)!r}): no such file ({path.absolute()}). Fix: a path "
                                 f"to the .nft file (relative to {os.getcwd()}), or the rule set text itself.")
        return path
    if isinstance(value, str):
        return value
    raise PktassertError(f"Session.dut(nftables={value!r}): a {type(value).__name__}. Fix: a .nft path or the rule "
                         f"set text.")


def _checked(a: _Args) -> _Args:
    """What no composition could make sense of, refused before anything is made."""
    directions = HOOKS["tc"].directions
    if a.direction is not None:
        if a.tc is None:
            raise PktassertError(f"Session.dut(direction={a.direction!r}): direction= is where a tc filter attaches, and "
                                 f"this dut has no tc= filter. Fix: drop direction=, or give tc=...")
        if a.direction not in directions:
            raise PktassertError(f"Session.dut(direction={a.direction!r}): tc filters attach at "
                                 f"{' or '.join(map(repr, directions))}.")
        if a.tc.direction is not None and a.tc.direction != a.direction:
            raise PktassertError(f"Session.dut(direction={a.direction!r}), but the tc filter was made with "
                                 f"direction={a.tc.direction!r}. Fix: one of them.")
    if not isinstance(a.fates, bool):
        raise PktassertError(f"Session.dut(fates={a.fates!r}): True (each packet's fate, live tier) or False.")
    if not isinstance(a.label, str):
        raise PktassertError(f"Session.dut(label={a.label!r}): a text that names the dut's namespaces.")
    if a.nftables is not None and a.tier == "unit":
        raise PktassertError("Session.dut(nftables=...): a rule set needs the live tier (the unit tier runs a BPF "
                             "filter alone, with no stack). Fix: tier=\"live\".")
    if a.xdp is None and a.tc is None and a.nftables is None and not (a.fates and a.tier == "live"):
        raise PktassertError("Session.dut(): nothing to test: no xdp=, tc= or nftables=, and no fates "
                             f"({'the unit tier has none' if a.tier == 'unit' else 'fates=False'}). Fix: "
                             f"xdp={KINDS}, tc=..., or nftables=\"rules.nft\"; or, to test the DUT's stack "
                             f"itself, the live tier with fates=True.")
    direction = a.direction or (a.tc.direction if a.tc is not None else None)
    return dataclasses.replace(a, direction=direction)
