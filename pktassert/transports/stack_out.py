"""Packets the DUT sends through its own stack (inject.from_dut on a DUT with a rule set and no filter of
its own): from a raw socket in the DUT namespace, so the output and postrouting chains, routing and the
neighbour table meet them as they meet any packet the DUT sends.

Each packet's tag goes to the fate tracker (``send_next``) before it is sent; its netfilter program at
the output hook registers the sk_buff under it (bpf/fates.bpf.c, pktassert_nf_out): nothing of the
packet carries it. No filter is on this way: the records are pktassert's pass-through's test runs of
the same frames (the kernel's parse of each; PASS), the fates say what became of each packet."""

from __future__ import annotations

import errno
import socket

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.instruments.fate_tracker import FateTracker
from pktassert.instruments.record import const
from pktassert.netns import Namespace
from pktassert.transports.path import Part
from pktassert.transports.unit import UnitPath

SO_COOKIE = 57
TRAILER = const("TRAILER_LEN")
ETH = 14
# what sendmsg says when netfilter dropped the packet on its way out (its fate says which rule)
DROPPED_OUT = {errno.EPERM}


class StackOutPath:
    tier = "live"
    magic = const("MAGIC_UNIT")  # the frames are run through the pass-through first: its test runs' records
    chunk = 16384

    def __init__(self, ns: Namespace, unit: UnitPath, tracker: FateTracker) -> None:
        self.unit, self.tracker = unit, tracker
        self.socks = {4: ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                      6: ns.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}
        self.cookies = {v: int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
                        for v, s in self.socks.items()}

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray) -> Part:
        part = self.unit.send(wire, start, total, records)
        data = wire.data.data
        for at, length, tag in zip(wire.offsets.tolist(), wire.lengths.tolist(), wire.tags.tolist()):
            ip = data[at + ETH:at + length - TRAILER]
            version = ip[0] >> 4 if len(ip) else 0
            if version not in self.socks:
                continue  # not IP: the stack sends no such packet from a socket (its fate stays UNKNOWN)
            self.tracker.send_next(self.cookies[version], tag)
            dst = socket.inet_ntop(socket.AF_INET if version == 4 else socket.AF_INET6,
                                   bytes(ip[16:20] if version == 4 else ip[24:40]))
            try:
                self.socks[version].sendto(ip, (dst, 0))
            except OSError as e:
                if e.errno not in DROPPED_OUT:
                    raise
        return Part(part.records, part.accounted, part.stray)  # the test runs' output frames are not what left

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
