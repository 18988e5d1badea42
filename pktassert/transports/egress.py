"""Frames the DUT itself sends, out through a tc egress filter to the peer (live tier).

A packet socket inside the DUT namespace sends each frame as the test crafted it (no trailer):
dev_queue_xmit runs the clsact egress hook in the sender's context, so the filter sees exactly
that frame. The tag rides in the sk_buff: the socket's priority is PKTASSERT_MAGIC_EGRESS and each
frame's mark (an SO_MARK control message) is its tag; the tc inspector takes both and gives the
filter the mark and priority the test chose (bpf/inspector_tc.h, pktassert_tc_opts).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.instruments.record import const
from pktassert.kernel import libbpf
from pktassert.netns import Endpoint
from pktassert.netns.topology_pool import later
from pktassert.observers.collect import Collector
from pktassert.programs.loaded import Loaded
from pktassert.transports.accounting import Shortfall
from pktassert.transports.path import Part

SO_MARK, SO_PRIORITY = 36, 12  # asm-generic/socket.h
TRAILER = const("TRAILER_LEN")


class EgressPath:
    tier = "live"
    magic = const("MAGIC_RING")  # the trailer Wire.build adds is cut off here; records come through the ring
    chunk = 16384

    def __init__(self, end: Endpoint, loaded: Loaded, collector: Collector) -> None:
        """Frames from a socket at ``end`` out through the tc egress filter ``loaded``."""
        self.loaded, self.collector = loaded, collector
        self.sock = end.netns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((end.ifname, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, const("MAGIC_EGRESS"))
        self.opts: tuple[int, int] | None = None

    def set_skb(self, mark: int, priority: int) -> None:
        """What the filter sees in skb->mark and skb->priority for the next frames."""
        if self.opts == (mark, priority):
            return
        fd = self.loaded.our_map_fd("pktassert_tc_opts")
        key, value = ctypes.c_uint32(0), (ctypes.c_uint32 * 2)(mark, priority)
        if libbpf.lib().bpf_map_update_elem(fd, ctypes.byref(key), value, 0) != 0:
            raise OSError(ctypes.get_errno(), "pktassert_tc_opts")
        self.opts = (mark, priority)

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray) -> Part:
        collector = self.collector
        before = collector.tally()
        refused = np.zeros(len(wire), bool)
        data, sendmsg, level = wire.data.data, self.sock.sendmsg, socket.SOL_SOCKET
        for i, (at, length, tag) in enumerate(zip(wire.offsets.tolist(), wire.lengths.tolist(), wire.tags.tolist())):
            try:
                sendmsg([data[at:at + length - TRAILER]], [(level, SO_MARK, struct.pack("=I", tag))])
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                refused[i] = True
        got = collector.collect(int(wire.tags[0]), records, before, refused)
        if not got.have.all():
            missing = ~got.have
            raise Shortfall(total, np.flatnonzero(missing) + start, never_left=int(got.undelivered.sum()),
                            never_left_why="the DUT's veth refused them (ENOBUFS)", lost=got.delta.lost,
                            stray=got.delta.stray_total).error()
        return Part(got.records, len(wire), got.delta.stray_total)

    def close(self) -> None:
        # Off the test's path: an AF_PACKET socket's close waits for an RCU grace period (~10 ms), and
        # this one (protocol 0) never receives, so nothing can be seen of it meanwhile.
        later(self.sock.close)

