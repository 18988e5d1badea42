"""The unit tier: each frame run through the loaded program by BPF_PROG_TEST_RUN, no traffic.

The program is the very one the live tier attaches (inspector included), so verdicts and parsed
fields come from the same code. Records go to the inspector's mmap-able slot array instead of
the ring buffer and are read in one copy after the runs.

Each frame is run as the hook gets it live. At tc ingress the kernel has taken a frame's outer
802.1Q/802.1ad tag out of the frame into the sk_buff (skb_vlan_untag, before tc): so the test run gets
the frame without it (skb->protocol is then the ethertype behind it, as live), the record is given the
tag as the inspector records it live from the sk_buff, and the output frame gets it back where the kernel
puts it when the frame leaves. What a test run cannot show is refused, saying why: the tag in the sk_buff
for a filter that reads it (vlan_present, vlan_tci, vlan_proto; bpf_skb_vlan_push/pop), and a tagged frame
too short for the kernel to untag (it drops it before tc). At tc egress a frame the DUT sends keeps its
tags (measured: vlan_present 0, skb->protocol the TPID), as a test run has it.
"""

from __future__ import annotations

import dataclasses
import errno
import os

import numpy as np

from pktassert.errors import AccountingError, InjectError
from pktassert.frames.wire import Wire
from pktassert.hooks.table import HOOKS
from pktassert.instruments.record import const, dtype_of
from pktassert.kernel.test_run import Batch
from pktassert.observers.outputs import TRAILER, Outputs
from pktassert.programs.loaded import Loaded
from pktassert.transports import skb_ctx
from pktassert.transports.path import Part

GROWTH = 256  # room kept for a filter that makes a frame longer (encapsulation, adjust_tail)
ETH_HLEN = 14
# Network headers a tc (sk_buff) test run must find whole in the frame: EtherType -> (name, length).
# The kernel refuses (EINVAL) an IPv4 or IPv6 frame cut inside that header (seen on 6.18).
WHOLE_HEADERS = {0x0800: ("IPv4", 20), 0x86DD: ("IPv6", 40)}
ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN-tagged", 0x88A8: "QinQ-tagged"}
WIRE_LEN_MAX = 65536  # GSO_LEGACY_MAX_SIZE: net/bpf/test_run.c, convert___skb_to_skb
GSO_SEGS_MAX = 65535  # GSO_MAX_SEGS
LIVE_TIER = '@pytest.mark.parametrize("tier", ["live"], indirect=True)'
VLAN_TPIDS = {0x8100: "802.1Q", 0x88A8: "802.1ad"}  # what the receive path untags (eth_type_vlan)
VLAN_HLEN = 4
UNTAG_MIN = ETH_HLEN + VLAN_HLEN + 2  # skb_vlan_untag pulls the tag and the type behind it, or drops the frame


class UnitPath:
    tier = "unit"
    magic = const("MAGIC_UNIT")  # records to the slots
    chunk = min(65536, const("SLOTS"))  # a batch may not wrap the slot array onto itself

    def __init__(self, loaded: Loaded, direction: str | None = "ingress") -> None:
        """``direction``: where a tc filter is attached (its hook's own for XDP)."""
        self.loaded = loaded
        self.dtype = dtype_of(loaded.record_type)
        # tc ingress: the kernel takes the outer VLAN tag into the sk_buff before the filter (not at egress).
        self.untags = loaded.hook.name == "tc" and (direction or "ingress") == "ingress"

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray | None = None,
             stride: int | None = None, ctx: bytes | None = None) -> Part:
        """Run every frame of ``wire`` (send positions ``start``...), records into ``records``;
        ``stride`` is the room kept for each output frame (default: the longest input plus GROWTH)."""
        if stride is None:
            stride = -(-(int(wire.lengths.max()) - TRAILER + GROWTH) // 64) * 64
        runner = self.loaded.runner
        tags = _Untagged.of(wire) if self.untags else None
        if tags is not None:
            self._check_tagged(wire, tags, start)
        ran = tags.wire if tags is not None else wire
        batch = runner.run_batch(ran.data, ran.offsets, ran.lengths, stride, ctx)
        failed = np.flatnonzero((batch.error != 0) & (batch.error != errno.ENOSPC))
        if len(failed):
            self._refused(ran, batch.error, int(failed[0]), start, ctx, tags)
        records = self.loaded.read_slots(int(wire.tags[0]), np.empty(len(wire), self.dtype) if records is None else records)
        own = records["tag"] == wire.tags
        if tags is not None:
            tags.into_records(records, own)
            tags.into_outputs(batch)
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

    def as_seen(self, frame: bytes, what: str = "the packet") -> bytes:
        """``frame`` as the hook gets it live, for a test run of one frame (cost()): at tc ingress without
        its outer VLAN tag; what a test run cannot show is refused, as in send()."""
        if not self.untags:
            return frame
        wire = Wire.build([frame], self.magic, 0)
        tags = _Untagged.of(wire)
        if tags is None:
            return frame
        self._check_tagged(wire, tags, 0, what)
        return bytes(tags.wire.frame(0)[:-TRAILER])

    def _check_tagged(self, wire: Wire, tags: _Untagged, start: int, what: str | None = None) -> None:
        """Refuse a tagged frame whose run would show the filter what tc ingress never does."""
        short = np.flatnonzero(wire.lengths[tags.index] - TRAILER < UNTAG_MIN)
        if len(short):
            i = int(tags.index[short[0]])
            length = int(wire.lengths[i]) - TRAILER
            raise InjectError(
                f"{what or f'packet #{start + i}'}, a {length}-byte VLAN-tagged frame, is one tc ingress never gets: "
                f"the kernel drops a tagged frame with less than {UNTAG_MIN - ETH_HLEN} bytes behind its Ethernet "
                f"header (the tag and the type behind it) before tc (skb_vlan_untag), so the filter gives it no "
                f"verdict. Fix: a frame of {UNTAG_MIN} bytes or more.")
        use = skb_ctx.vlan_use(self.loaded)
        if use:
            i, tpid, tci = int(tags.index[0]), int(tags.tpid[0]), int(tags.tci[0])
            func = getattr(self.loaded, "func", None) or self.loaded.subject.func
            raise InjectError(
                f"{what or f'packet #{start + i}'} is VLAN-tagged ({VLAN_TPIDS[tpid]}, VLAN {tci & 0x0FFF}), and "
                f"{func}() {use}: at tc ingress the kernel takes the outer tag out of the frame into the sk_buff "
                f"(vlan_present 1, vlan_tci {tci}, vlan_proto 0x{tpid:04x}) before the filter runs, and a test run "
                f"(BPF_PROG_TEST_RUN) cannot set them (there the filter would find no tag in the sk_buff). Fix: "
                f"test VLAN-tagged frames with this filter in the live tier ({LIVE_TIER}), and untagged ones in "
                f"either.")

    def _refused(self, wire: Wire, error: np.ndarray, i: int, start: int, ctx: bytes | None,
                 tags: _Untagged | None = None) -> None:
        frame = bytes(wire.frame(i)[:-TRAILER])
        limit = self.loaded.runner.max_len() - TRAILER
        what = f"packet #{start + i}"
        if tags is not None and i in tags.index:
            what += " (VLAN-tagged: run without its outer tag, as tc ingress gets it)"
        raise InjectError(refusal(what, frame, self.loaded.hook.name, int(error[i]), ctx, limit))

    def close(self) -> None:
        pass  # nothing per test: the slots belong to the loaded program


def refusal(what: str, frame: bytes, hook: str, err: int, ctx: bytes | None, limit: int, tag: int = TRAILER,
            live: bool = True) -> str:
    """Why the kernel's test run of a ``hook`` program refused ``frame`` (errno ``err``; ``ctx``: the
    sk_buff the run started from; ``tag``: the bytes of ours the run carried after the frame), as far as
    it can be known (the kernel gives only the errno), and the fix (``live``: the live tier is one, as it
    is for inject() and run(), not for cost(), which times test runs in either tier)."""
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
                    f"more)" + (f", or test it in the live tier ({LIVE_TIER}), where the kernel hands tc the frame as "
                                f"it came." if live else "."))
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
    fix = f"test this frame in the live tier ({LIVE_TIER})" if live else "time another frame"
    return (f"{head}, and the kernel does not say why: {checked}, as far as pktassert knows. Fix: {fix}; and please "
            f"report it to pktassert with the frame: {frame[:64].hex()}")


def _skb_fields(ctx: bytes | None) -> dict[str, int]:
    """The sk_buff fields a tc test run was given that the kernel checks (0 when not given)."""
    if not ctx:
        return {}

    skb = skb_ctx.skb_type().from_buffer_copy(ctx)
    return {name: int(getattr(skb, name)) for name in ("ifindex", "wire_len", "gso_segs")}


@dataclasses.dataclass
class _Untagged:
    """The frames of a wire that tc ingress gets without their outer VLAN tag, and that tag."""

    wire: Wire          # every frame as the test run gets it: the tagged ones 4 bytes shorter
    index: np.ndarray   # which frames were tagged
    tpid: np.ndarray    # their outer tag: its TPID (vlan_proto) and TCI (vlan_tci)
    tci: np.ndarray
    third: np.ndarray   # the ethertype 4 bytes behind the tag left in the frame (a third tag's TPID), or 0

    @classmethod
    def of(cls, wire: Wire) -> _Untagged | None:
        """None when no frame is tagged (the common case costs one look at each frame's type)."""
        long_enough = wire.lengths - TRAILER >= ETH_HLEN
        at = wire.offsets[long_enough]
        kinds = wire.data[at + 12].astype(np.uint16) << 8 | wire.data[at + 13]
        index = np.flatnonzero(long_enough)[np.isin(kinds, list(VLAN_TPIDS))]
        if not len(index):
            return None
        data, offsets, lengths = wire.data, wire.offsets, wire.lengths
        starts = offsets[index]

        def be16(where: np.ndarray) -> np.ndarray:
            return data[where].astype(np.uint16) << 8 | data[where + 1]

        whole = lengths[index] - TRAILER >= UNTAG_MIN
        tci = np.zeros(len(index), np.uint16)
        tci[whole] = be16(starts[whole] + 14)
        deep = lengths[index] - TRAILER >= ETH_HLEN + 2 * VLAN_HLEN  # the type behind the tag left in the frame
        third = np.zeros(len(index), np.uint16)
        third[deep] = be16(starts[deep] + 20)
        keep = np.ones(len(data), bool)
        keep[(starts[:, None] + np.arange(12, 12 + VLAN_HLEN)).ravel()] = False
        cut = np.zeros(len(wire), np.int64)
        cut[index] = VLAN_HLEN
        untagged = Wire(np.ascontiguousarray(data[keep]), offsets - (np.cumsum(cut) - cut), lengths - cut, wire.tags)
        return cls(untagged, index, be16(starts + 12), tci, third)

    def into_records(self, records: np.ndarray, own: np.ndarray) -> None:
        """Each tagged frame's record as the tc inspector writes it live, where the tag is in the sk_buff
        (bpf/inspector_tc.h, pktassert_parse_skb): 4 bytes longer, the tag the outer one; past two tags in
        all, the parser's limit, nothing of L3/L4 (the third tag's TPID as the ethertype)."""
        at = self.index[own[self.index]]
        if not len(at):
            return
        vid = (self.tci[own[self.index]] & 0x0FFF).astype(records["vlan_outer"].dtype)
        third = self.third[own[self.index]]
        records["len"][at] += VLAN_HLEN
        few = records["vlan_count"][at] < 2
        records["vlan_inner"][at] = records["vlan_outer"][at]
        records["vlan_outer"][at] = vid
        records["vlan_count"][at[few]] += 1
        many = at[~few]
        if len(many):
            records["ethertype"][many] = third[~few]
            records["parsed"][many] = const("P_L2") | const("P_VLAN_MORE")
            for name in ("l3", "proto", "ttl", "tcp_flags", "icmp_type", "icmp_code", "sport", "dport", "src", "dst"):
                records[name][many] = 0

    def into_outputs(self, batch: Batch) -> None:
        """Each tagged frame's output with its outer tag back behind the MAC addresses, where the kernel
        puts it when the frame leaves (the sk_buff keeps it; a test run's output has only the data)."""
        out, i = batch.out, self.index
        tag = np.empty((len(i), VLAN_HLEN), np.uint8)
        tag[:, 0], tag[:, 1] = self.tpid >> 8, self.tpid & 0xFF
        tag[:, 2], tag[:, 3] = self.tci >> 8, self.tci & 0xFF
        rows = out[i]
        rows[:, 12 + VLAN_HLEN:] = rows[:, 12:-VLAN_HLEN]
        rows[:, 12:12 + VLAN_HLEN] = tag
        out[i] = rows
        batch.size_out[i] += VLAN_HLEN
