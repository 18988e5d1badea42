"""inject(): turn what a test passes into frames, run them through the tier's path, return a Capture."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pktassert.bpf import DIR as BPF_DIR
from pktassert.device.dut import XdpUnderTest
from pktassert.device.stages import Follower, take_tags
from pktassert.errors import InjectError
from pktassert.frames import pcap
from pktassert.frames.convert import check_size, complete, to_frames
from pktassert.frames.flood import Flood
from pktassert.frames.wire import Wire, sampled
from pktassert.instruments.sender import Sender
from pktassert.machine import host
from pktassert.observers import live_outputs
from pktassert.observers.fate_reader import FateReader
from pktassert.observers.live_outputs import LiveOutputs
from pktassert.observers.outputs import Outputs
from pktassert.results.capture import Capture
from pktassert.results.columns import Columns, Facts
from pktassert.transports import skb_ctx
from pktassert.transports.egress import EgressPath
from pktassert.transports.engine import EnginePath
from pktassert.transports.live import LivePath
from pktassert.transports.path import Part, Path
from pktassert.transports.stack_out import StackOutPath
from pktassert.transports.unit import UnitPath

MTU = 1500
ENGINE_FROM = 64  # packets per inject() from which the live tier uses the traffic engine
KEEP = 1_000_000  # per-packet records kept by default (80 bytes each)


def _touch(a: np.ndarray) -> None:
    a.view(np.uint8).fill(0)  # numpy lets go of the GIL for this


def _origin() -> str:
    """Where the test called inject(): the first frame outside pktassert, as file:line."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # pktassert/, this file's folder's parent
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(here):
        f = f.f_back  # type: ignore[assignment]
    return "" if f is None else f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def _chunks(n: int, most: int, first: int = 4096, ramp: int = 3) -> list[int]:
    """Chunk bounds for ``n`` frames: growing by ``ramp`` up to ``most``, so the kernel starts on a
    short chunk while the next is built, and each build (~0.2 us a frame) ends before the kernel is
    through the chunk before it (~0.4-0.7 us a frame)."""
    if n <= most:
        return [0, n]
    bounds, size = [0], first
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + size))
        size = min(most, size * ramp)
    return bounds


def _whole(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class Injector:
    """The ``inject`` fixture: ``inject(packets, count=1, vary=None) -> Capture``.

    In the live tier the frames go from the peer namespace over the veth; in the unit tier the
    kernel runs the same program on each of them (BPF_PROG_TEST_RUN). Either way the result is a
    Capture in send order; the unit tier's also has each frame as the filter left it.
    """

    def __init__(self, xdp: XdpUnderTest, sender: Callable[[], Sender] | None = None) -> None:
        self.xdp = xdp  # the filter the test asked for
        # With an XDP stage in front (the test's XDP filter, or pktassert's pass-through that tc
        # ingress needs for the traffic engine), frames go to the first stage; the others follow.
        self.first = xdp.front if xdp.front is not None else xdp
        first = self.first
        self.path: Path = (UnitPath(first.loaded, first.direction) if xdp.tier == "unit"
                           else LivePath(first.peer, first.dut, first.collector))
        # Floods in the live tier go through the traffic engine; a few packets through a socket.
        self._engine: Path | None = None
        self._sender = sender
        self.captures: list[Capture] = []  # every Capture this injector returned, in order

    @property
    def tier(self) -> str:
        return self.path.tier

    def __call__(self, packets: Any, count: int | None = None, vary: Mapping[str, Any] | None = None,
                 keep: int = KEEP, rate: float | None = None, duration: float | None = None,
                 seed: int | None = None, **skb: Any) -> Capture:
        """Packets from the peer to the DUT; see _inject."""
        self._check_ingress("inject()")
        return self._inject(packets, count, vary, keep, rate, duration, seed, skb, egress=False)

    def _check_ingress(self, call: str) -> None:
        if self.tier == "live" and self.xdp.hook.name == "tc" and self.xdp.direction == "egress":
            raise InjectError(f"{call} sends from the peer to the DUT, which a tc egress filter never sees. Fix: "
                              f"inject.from_dut(...) for what the DUT sends, or direction=\"ingress\".")

    def from_dut(self, packets: Any, count: int | None = None, vary: Mapping[str, Any] | None = None,
                 keep: int = KEEP, seed: int | None = None, **skb: Any) -> Capture:
        """Packets the DUT sends to the peer, through the tc egress filter (live tier: from a socket in
        the DUT namespace; ``mark=`` and ``priority=`` set what the filter sees in the sk_buff). The
        peer's view: ``tc.received_by_peer()``. A DUT with a rule set and no filter of its own sends them
        through its stack (a raw socket): the output and postrouting chains judge them."""
        if self.tier == "live" and not _through_stack(self.xdp):
            _check_egress(self.xdp)
        return self._inject(packets, count, vary, keep, None, None, seed, skb, egress=True)

    def _inject(self, packets: Any, count: int | None, vary: Mapping[str, Any] | None, keep: int,
                rate: float | None, duration: float | None, seed: int | None, skb: dict[str, Any],
                egress: bool) -> Capture:
        """``seed``: vary= values drawn at random (reproducibly) instead of in turn.
        ``mark=``, ``priority=``, ``cb=``, ``tstamp=``, ... (tc filters): the sk_buff fields the filter
        sees; set in the unit tier's test runs; in the live tier only what really arrives (0).
        ``rate``: packets per second (paced, through a socket) instead of as fast as possible;
        with ``duration`` it sets the count. ``keep``: most per-packet records kept; above it,
        every k-th packet's record is kept (the capture says so) and the verdict counts still
        come exact from the counters."""
        if duration is not None:
            if not (_number(duration) and duration > 0):
                raise InjectError(f"duration={duration!r}: give seconds, a number more than 0.")
            if rate is None or count is not None or isinstance(packets, (list, tuple)):
                raise InjectError("duration= goes with rate= (packets per second) and sets how many copies of one "
                                  "template packet are sent; give one packet with rate= and duration=, or count=; "
                                  "a list is sent once, paced by rate= alone.")
            count = max(1, round(rate * duration))
        self._egress = egress
        self._ctx = self._skb_context(skb)
        src, dst = (self.xdp.dut, self.xdp.peer) if egress else (self.xdp.peer, self.xdp.dut)
        count = 1 if count is None else count
        if not _whole(count) or count < 1:
            raise InjectError(f"count={count!r}: give a positive whole number of packets.")
        if not _whole(keep) or keep < 1:
            raise InjectError(f"keep={keep!r}: give how many per-packet records to keep, a whole number from 1 "
                              f"(above it, every k-th packet's record is kept and counts stay exact).")
        if rate is not None and not (_number(rate) and rate > 0):
            raise InjectError(f"rate={rate!r}: give packets per second, a number more than 0.")
        if seed is not None and not vary:
            raise InjectError(f"seed={seed!r} draws vary= values at random; without vary= it would do nothing. "
                              f"Fix: give vary=, or drop seed=.")
        if count > 1 or vary:
            if isinstance(packets, (list, tuple)) and len(packets) != 1:
                raise InjectError("count= and vary= take one template packet, not a list.")
            one = packets[0] if isinstance(packets, (list, tuple)) else packets
            bytes(to_frames(one, src, dst)[0])  # refuses what is not a packet
            # The scapy packet itself when there is one: it knows which checksums the test set on purpose.
            template = complete(one, src, dst) if isinstance(one, Packet) else Ether(bytes(one))
            flood = Flood(template, count, vary, seed)
            check_size(flood.first, MTU)
            frames: list[bytes] | Flood = flood
        else:
            frames = to_frames(packets, src, dst)
            check_size(frames, MTU)
        schedule = None if rate is None else np.arange(len(frames), dtype=np.float64) / rate
        capture = self._send(frames, keep, _origin(), schedule)
        self.captures.append(capture)
        return capture

    def _skb_context(self, skb: dict[str, Any]) -> bytes | None:
        stack = self._egress and self.tier == "live" and _through_stack(self.xdp)
        if not skb and not (self._egress and self.tier == "live" and not stack):
            return None
        if stack:
            raise InjectError(f"{', '.join(f'{k}=' for k in skb)}: what the DUT sends through its stack gets the "
                              f"sk_buff the stack makes; no filter of the test's is on its way to be shown others. "
                              f"Fix: drop them (a tc egress filter under test takes mark= and priority=).")
        names = ", ".join(f"{k}=" for k in skb)
        if self.xdp.hook.name != "tc":
            raise InjectError(f"{names}: sk_buff fields, for tc filters; an XDP program runs before there is an "
                              f"sk_buff. Fix: drop {names}")
        if self.tier == "live" and self._egress:
            other = sorted(set(skb) - {"mark", "priority"})
            if other:
                raise InjectError(f"{', '.join(f'{k}=' for k in other)}: frames the DUT sends get only mark= and "
                                  f"priority= set for real in the live tier. Fix: test the rest in the unit tier.")
            self._egress_path().set_skb(skb.get("mark", 0), skb.get("priority", 0))
            return None
        if self.tier == "live":
            real = {k: v for k, v in skb.items() if not (k in ("mark", "priority") and v == 0)}
            if real:
                raise InjectError(f"{', '.join(f'{k}={v!r}' for k, v in real.items())}: in the live tier a frame "
                                  f"arrives from the peer with mark 0 and priority 0, and nothing sets the rest "
                                  f"before tc ingress. Fix: test it in the unit tier "
                                  f"(@pytest.mark.parametrize(\"tier\", [\"unit\"], indirect=True)).")
            return None

        return skb_ctx.context(skb)

    def pcap(self, path: str | os.PathLike[str], speed: float | str = "max", rate: float | None = None,
             keep: int = KEEP) -> Capture:
        """Replay a capture (pcap or pcapng): ``speed="max"``, or its own timing scaled by ``speed``
        (1.0 = as recorded), or at ``rate`` packets per second. In the unit tier time is not replayed."""
        if not _whole(keep) or keep < 1:
            raise InjectError(f"keep={keep!r}: give how many per-packet records to keep, a whole number from 1.")
        if rate is not None and not (_number(rate) and rate > 0):
            raise InjectError(f"rate={rate!r}: give packets per second, a number more than 0.")
        self._check_ingress("inject.pcap()")
        self._ctx, self._egress = None, False
        frames, times = pcap.read(path)
        check_size(frames, MTU)
        if rate is not None:
            schedule: np.ndarray | None = np.arange(len(frames), dtype=np.float64) / rate
        elif speed == "max":
            schedule = None
        elif isinstance(speed, (int, float)) and _number(speed) and speed > 0:
            schedule = times / speed
        else:
            raise InjectError(f"speed={speed!r}: \"max\", or a positive factor of the recorded timing (1.0 = as recorded).")
        capture = self._send(frames, keep, _origin(), schedule)
        self.captures.append(capture)
        return capture

    _ctx: bytes | None = None
    _egress = False
    _egress_out: EgressPath | None = None

    def _egress_path(self) -> EgressPath:
        if self._egress_out is None:
            self._egress_out = EgressPath(self.xdp.dut, self.xdp.loaded, self.xdp.collector)
        return self._egress_out

    _stack_out: StackOutPath | None = None

    def _stack_path(self) -> StackOutPath:
        if self._stack_out is None:
            tracer = self.xdp.nft_tracer()
            assert tracer is not None and self.xdp.fates is not None  # _through_stack: a rule set, fates
            tracer.trace_output()
            self._stack_out = StackOutPath(self.xdp.dut.netns, self.xdp.unit_path, self.xdp.fates)
        return self._stack_out

    def _path_for(self, n: int) -> Path:
        # Egress: the DUT's own socket. Ingress floods: the engine, which delivers through an XDP program
        # on the DUT (the test's XDP filter, or for tc alone pktassert's tag mover).
        if self._egress and self.path.tier == "live":
            if _through_stack(self.xdp):
                return self._stack_path()
            return self._egress_path()
        delivers = self.first.hook.name == "xdp" or self.first.mover is not None  # an XDP program on the DUT
        if self.path.tier == "unit" or n < ENGINE_FROM or self._sender is None or not delivers:
            return self.path
        if self._engine is None:
            self._engine = EnginePath(self.first.peer, self.first.dut, self.first.loaded, self.first.collector,
                                      self._sender())
        return self._engine

    def _send(self, frames: list[bytes] | Flood, keep: int, origin: str, schedule: np.ndarray | None = None) -> Capture:
        n = len(frames)
        # Paced traffic goes through the socket: the engine sends a call's frames back to back.
        path = self.path if schedule is not None else self._path_for(n)
        if path.tier == "unit":
            schedule = None
        step = -(-n // keep)  # 1 unless the flood is larger than what we keep records of
        first = self.xdp if self._egress else self.first
        records = np.empty(-(-n // step), first.collector.dtype)
        parts: list[Part] = []
        actions = first.loaded.actions
        exact = np.zeros(actions.slots(), np.int64)  # every packet's verdict counted, sampled or not
        followers = [] if first is self.xdp else [Follower(self.xdp, n, step)]
        first_tag = take_tags([first.loaded, *(f.dut.loaded for f in followers)], n)
        tracker = self.xdp.fates if path.tier == "live" else None  # from_dut too: sent, or dropped where
        if tracker is not None and host.problem("IPv6"):
            _refuse_ipv6(frames)
        fates = FateReader(tracker, n, step) if tracker is not None else None
        tracer = self.xdp.nft_tracer() if fates is not None else None
        if tracer is not None:
            tracer.switch(self.xdp.tracing)
            tracer.start()
        bounds = _chunks(n, path.chunk)

        def wire_at(k: int, touch: bool = False) -> Wire:
            start, stop = bounds[k], bounds[k + 1]
            if touch:  # the page faults of a fresh records array cost as much as copying the records in
                _touch(records[sampled(start, stop, step)[0]])
            if isinstance(frames, Flood):
                rows, lengths = frames.rows(start, stop)
                return Wire.build(rows, path.magic, first_tag + start, lengths)
            return Wire.build(frames[start:stop], path.magic, first_tag + start)

        if schedule is not None:
            schedule = schedule + time.monotonic() + 0.001  # from now: the first chunk is built
        if len(bounds) == 2:
            parts.append(self._run(path, wire_at(0), 0, n, n, step, records, exact, schedule, actions, self._ctx,
                                   followers, fates))
        else:  # the next chunk is built on another thread while this one is in the kernel (GIL released)
            with ThreadPoolExecutor(1) as builder:
                ahead = builder.submit(wire_at, 0)
                for k, start in enumerate(bounds[:-1]):
                    wire = ahead.result()
                    if k + 2 < len(bounds):
                        ahead = builder.submit(wire_at, k + 1, True)
                    parts.append(self._run(path, wire, start, start + len(wire), n, step, records, exact, schedule,
                                           actions, self._ctx, followers, fates))
        accounted = sum(p.accounted for p in parts)
        frame = frames.frame if isinstance(frames, Flood) else frames.__getitem__
        outputs: Outputs | LiveOutputs | None = None
        if parts[0].outputs is not None:
            outputs = Outputs.join([p.outputs for p in parts if p.outputs is not None], frame)
        elif path.tier == "live" and step == 1 and first.receiver is not None and first.hook.name == "xdp":
            outputs = live_outputs.collect(first.receiver, records, first_tag, frame, first.landings())
        printed: dict[int, list[str]] = {}
        for dut in (first, *(f.dut for f in followers)):
            if dut.printk is not None:
                pipe, nonce = dut.printk
                printed.update(pipe.take(nonce))
        columns = Columns(records, np.arange(0, n, step), *((fates.codes, fates.records) if fates is not None else ()))
        facts = Facts(frame, sent=n, accounted=accounted, tier=path.tier, step=step, exact=exact if step > 1 else None,
                      stray=sum(p.stray for p in parts), actions=actions, hook=first.hook.name, outputs=outputs,
                      fate_exact=fates, origin=origin, flood=frames if isinstance(frames, Flood) else None,
                      printed=printed)
        later = {f.dut.hook.name: f.capture(columns, facts) for f in followers}
        if tracer is not None and fates is not None:
            rose = tracer.conntrack_rose()
            facts = dataclasses.replace(facts, conntrack=rose, ct_active=bool(rose.get("invalid")) or
                                        bool(fates.ct_infos[1:9].any()), netfilter=tracer.netfilter)
            if tracer.on:  # which rule decided, per packet (the kernel wrote it into each fate record)
                columns = dataclasses.replace(columns, fate_rules=tracer.decide(fates.records))
                facts = dataclasses.replace(facts, rule_tally=tracer.counts(fates.rules))
            else:
                facts = dataclasses.replace(facts, rules_unknown=(
                    "rules were not traced in this inject() (dut.tracing = False). Fix: leave dut.tracing on."))
        return Capture(columns, facts, later)

    @staticmethod
    def _run(path: Path, wire: Wire, start: int, stop: int, n: int, step: int, records: np.ndarray,
             exact: np.ndarray, schedule: np.ndarray | None, actions: Any, ctx: bytes | None = None,
             followers: Sequence[Follower] = (), fates: FateReader | None = None) -> Part:
        paced: dict[str, Any] = {} if schedule is None else {"at": schedule[start:stop]}
        if ctx is not None:
            paced["ctx"] = ctx
        for f in followers:
            f.before_send()
        if followers and path.tier == "unit":
            paced.pop("ctx", None)  # the sk_buff fields are the tc stage's; XDP has none
        if step == 1:
            part = path.send(wire, start, n, records[start:stop], **paced)
        else:
            part = path.send(wire, start, n, np.empty(stop - start, records.dtype), **paced)
            into, rows = sampled(start, stop, step)  # the sample: every packet whose position is a multiple of step
            records[into] = part.records[rows]
        for f in followers:
            f.follow(path.magic, wire, part, start, stop, ctx)
        if fates is not None:  # after the filters' records: the stack works on what they passed
            every = np.ones(len(wire), bool)
            fates.take(wire.tags, [(actions, part.records["verdict"], every),
                                   *((f.dut.loaded.actions, *f.chunk) for f in followers)], start)
        exact += actions.tally(part.records["verdict"])
        return Part(records[:0], part.accounted, part.stray, part.outputs if step == 1 else None)

    def close(self) -> None:
        self.path.close()
        if self._egress_out is not None:
            self._egress_out.close()
        if self._stack_out is not None:
            self._stack_out.close()
        if self._engine is not None:
            self._engine.close()


def _refuse_ipv6(frames: list[bytes] | Flood) -> None:
    """IPv6 frames' fates on a kernel without IPv6 would be the stack's refusal, not the DUT's answer."""
    sample = [frames.first] if isinstance(frames, Flood) else frames
    if any(bytes(f)[12:14] == b"\x86\xdd" for f in sample):
        host.check("IPv6")


def _through_stack(dut: XdpUnderTest) -> bool:
    """What the DUT sends goes through its stack: a rule set and no filter of its own (pktassert's pass-through)."""
    return (dut.nft is not None and dut.fates is not None
            and pathlib.Path(str(dut.program.name)).resolve() == (BPF_DIR / "pass_through.bpf.c").resolve())


def _check_egress(dut: XdpUnderTest) -> None:
    if dut.hook.name != "tc" or dut.direction != "egress":
        where = f"at {dut.hook.name} {dut.direction}" if dut.hook.name == "tc" else "at XDP (ingress only)"
        raise InjectError(f"inject.from_dut() sends from the DUT out through a tc egress filter; this filter is {where}. "
                          f"Fix: @pytest.mark.tc(..., direction=\"egress\"), or inject() for traffic to the DUT.")
