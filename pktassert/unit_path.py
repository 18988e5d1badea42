"""The unit tier: each frame run through the loaded program by BPF_PROG_TEST_RUN, no traffic.

The program is the very one the live tier attaches (inspector included), so verdicts and parsed
fields come from the same code. Records go to the inspector's mmap-able slot array instead of
the ring buffer and are read in one copy after the runs.
"""

from __future__ import annotations

import errno
import os

import numpy as np

from pktassert.bpf.hooks import HOOKS
from pktassert.bpf.loaded import Loaded
from pktassert.errors import AccountingError, InjectError
from pktassert.outputs import TRAILER, Outputs
from pktassert.path import Part
from pktassert.record import const, dtype_of
from pktassert.wire import Wire

GROWTH = 256  # room kept for a filter that makes a frame longer (encapsulation, adjust_tail)
ETH_HLEN = 14
# Network headers a tc (sk_buff) test run must find whole in the frame: EtherType -> (name, length).
# The kernel refuses (EINVAL) an IPv4 or IPv6 frame cut inside that header (seen on 6.18).
WHOLE_HEADERS = {0x0800: ("IPv4", 20), 0x86DD: ("IPv6", 40)}
ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN-tagged", 0x88A8: "QinQ-tagged"}
WIRE_LEN_MAX = 65536  # GSO_LEGACY_MAX_SIZE: net/bpf/test_run.c, convert___skb_to_skb
GSO_SEGS_MAX = 65535  # GSO_MAX_SEGS
LIVE_TIER = '@pytest.mark.parametrize("tier", ["live"], indirect=True)'


class UnitPath:
    tier = "unit"
    magic = const("MAGIC_UNIT")  # records to the slots
    chunk = min(65536, const("SLOTS"))  # a batch may not wrap the slot array onto itself

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.dtype = dtype_of(loaded.record_type)

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray | None = None,
             stride: int | None = None, ctx: bytes | None = None) -> Part:
        """Run every frame of ``wire`` (send positions ``start``...), records into ``records``;
        ``stride`` is the room kept for each output frame (default: the longest input plus GROWTH)."""
        if stride is None:
            stride = -(-(int(wire.lengths.max()) - TRAILER + GROWTH) // 64) * 64
        runner = self.loaded.runner
        batch = runner.run_batch(wire.data, wire.offsets, wire.lengths, stride, ctx)
        failed = np.flatnonzero((batch.error != 0) & (batch.error != errno.ENOSPC))
        if len(failed):
            self._refused(wire, batch.error, int(failed[0]), start, ctx)
        records = self.loaded.read_slots(int(wire.tags[0]), np.empty(len(wire), self.dtype) if records is None else records)
        own = records["tag"] == wire.tags
        # A tail call left the inspector before it could finish the record: the test run's return
        # value is the tail-called program's verdict, exactly.
        tail = own & (records["verdict"] == const("PENDING"))
        if tail.any():
            ret = batch.retval[tail].astype(np.uint32).view(np.int32)
            records["ret"][tail] = ret
            records["verdict"][tail] = [int(self.loaded.actions.of(int(v))) & 0xFFFFFFFF for v in ret]
            records["note"][tail] |= const("N_TAIL_CALL")
        wrong = np.flatnonzero(~own | (records["ret"].view(np.uint32) != batch.retval.astype(np.uint32)))
        if len(wrong):
            i = int(wrong[0])
            raise AccountingError(
                f"bug in pktassert: the inspector's record for packet #{start + i} does not match its test run "
                f"(tag {records['tag'][i]} for {wire.tags[i]}, return value {records['ret'][i]} for "
                f"{batch.retval[i]}); {len(wrong)} of {len(wire)} differ. Please report it.")
        return Part(records, len(wire), 0, Outputs.from_batch(wire, batch, start))

    def _refused(self, wire: Wire, error: np.ndarray, i: int, start: int, ctx: bytes | None) -> None:
        frame = bytes(wire.frame(i)[:-TRAILER])
        limit = self.loaded.runner.max_len() - TRAILER
        raise InjectError(refusal(f"packet #{start + i}", frame, self.loaded.hook.name, int(error[i]), ctx, limit))

    def close(self) -> None:
        pass  # nothing per test: the slots belong to the loaded program


def refusal(what: str, frame: bytes, hook: str, err: int, ctx: bytes | None, limit: int, tag: int = TRAILER) -> str:
    """Why the kernel's test run of a ``hook`` program refused ``frame`` (errno ``err``; ``ctx``: the
    sk_buff the run started from; ``tag``: the bytes of ours the run carried after the frame), as far as
    it can be known (the kernel gives only the errno), and the fix."""
    length = len(frame)
    if length > limit:
        return (f"the kernel refused {what}, a {length}-byte frame, for a test run; it takes {HOOKS[hook].title} frames of "
                f"{ETH_HLEN} to {limit} bytes here. Fix: a shorter frame.")
    ethertype = int.from_bytes(frame[12:14], "big") if length >= ETH_HLEN else None
    kind = f"{ETHERTYPES[ethertype]} " if ethertype in ETHERTYPES else ""
    head = (f"the kernel refused {what}, a {length}-byte {kind}frame"
            + (f" (EtherType 0x{ethertype:04x})" if ethertype is not None else "")
            + f", for a {HOOKS[hook].title} test run (BPF_PROG_TEST_RUN: {os.strerror(err)})")
    if length < ETH_HLEN:
        return (f"{head}: it is shorter than an Ethernet header ({ETH_HLEN} bytes). Fix: whole frames, from "
                f"{ETH_HLEN} bytes.")
    skb = _skb_fields(ctx) if hook == "tc" else {}
    if err == errno.ENODEV and skb.get("ifindex", 0) > 1:
        return (f"{head}: ifindex={skb['ifindex']} names no interface the test run can find (the kernel looks up an "
                f"ifindex above 1 in the test's network namespace). Fix: ifindex=1 (lo), or leave it out.")
    if err == errno.EINVAL and hook == "tc":
        if ethertype in WHOLE_HEADERS and length + tag < ETH_HLEN + WHOLE_HEADERS[ethertype][1]:
            name, size = WHOLE_HEADERS[ethertype]
            return (f"{head}: it takes an {name} frame only with its whole {size}-byte {name} header, and this one has "
                    f"{length - ETH_HLEN} bytes of it. Fix: a frame with the whole header ({ETH_HLEN + size} bytes or "
                    f"more), or test it in the live tier ({LIVE_TIER}), where the kernel hands tc the frame as it "
                    f"came.")
        wire_len, carried = skb.get("wire_len", 0), length + tag
        if wire_len and not carried <= wire_len <= WIRE_LEN_MAX:
            carries = f"{length} bytes and pktassert's {tag}-byte tag after it" if tag else f"{length} bytes"
            why = (f"is less than the frame the test run carries ({carries})" if wire_len < carried
                   else f"is more than the kernel takes ({WIRE_LEN_MAX})")
            return f"{head}: wire_len={wire_len} {why}. Fix: wire_len= from {carried} to {WIRE_LEN_MAX}, or leave it out."
        if skb.get("gso_segs", 0) > GSO_SEGS_MAX:
            return (f"{head}: gso_segs={skb['gso_segs']} is more than the kernel takes ({GSO_SEGS_MAX}). Fix: "
                    f"gso_segs= up to {GSO_SEGS_MAX}.")
    checked = ("its length, its IPv4 or IPv6 header and the sk_buff fields given are all ones it takes"
               if hook == "tc" else "its length is one it takes")
    return (f"{head}, and the kernel does not say why: {checked}, as far as pktassert knows. Fix: test this frame in "
            f"the live tier ({LIVE_TIER}); and please report it to pktassert with the frame: {frame[:64].hex()}")


def _skb_fields(ctx: bytes | None) -> dict[str, int]:
    """The sk_buff fields a tc test run was given that the kernel checks (0 when not given)."""
    if not ctx:
        return {}
    from pktassert.bpf import skb_ctx

    skb = skb_ctx.skb_type().from_buffer_copy(ctx)
    return {name: int(getattr(skb, name)) for name in ("ifindex", "wire_len", "gso_segs")}
