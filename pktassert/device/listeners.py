"""Real sockets in the DUT namespace that a test opens (``dut.listen``), each with pktassert's
delivery filter on it, so a packet's fate can say which socket took it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

from pktassert.errors import PktassertError
from pktassert.instruments.fate_tracker import FateTracker
from pktassert.netns import Namespace
from pktassert.netns.topology import ipv6_enabled

SO_COOKIE = 57
KINDS = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0), "raw": (socket.SOCK_RAW, None)}


class Listener:
    """One test socket: TCP listening on a port, UDP bound to a port, or raw for an IP protocol."""

    def __init__(self, ns: Namespace, kind: str, number: int, backlog: int, tracker: FateTracker) -> None:
        self.kind, self.number = kind, number
        sock_type, proto = KINDS[kind]
        family = socket.AF_INET if kind == "raw" or not ipv6_enabled() else socket.AF_INET6
        self.sock = ns.socket(family, sock_type, number if proto is None else proto)
        try:
            if family == socket.AF_INET6:  # one socket for IPv4 and IPv6
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if kind != "raw":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", number))
            tracker.attach_socket(self.sock)  # before listen(): no packet reaches it unfiltered
            if kind == "raw":
                tracker.track_raw()
            if kind == "tcp":
                self.sock.listen(backlog)
            self.sock.setblocking(False)
        except OSError as e:
            self.sock.close()
            raise PktassertError(f"dut.listen({kind}={number}): {e.strerror or e}.") from None
        self.cookie = int.from_bytes(self.sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")

    def received(self) -> list[bytes]:
        """What UDP or raw datagrams it holds, taken out of its queue (raw: from the IP header on)."""
        if self.kind == "tcp":
            raise PktassertError("a TCP listener receives connections, not datagrams. Fix: accepted().")
        out = []
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(self.sock.recv(65536))
        return out

    def accepted(self) -> int:
        """How many connections completed the handshake and were waiting; accepted and closed."""
        n = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                conn, _ = self.sock.accept()
                conn.close()
                n += 1
        return n

    def close(self) -> None:
        self.sock.close()

    def __repr__(self) -> str:
        return f"<listener {self.kind}={self.number} in the DUT namespace>"


def open_listeners(ns: Namespace, tracker: FateTracker, backlog: int, **wanted: int | Iterable[int] | None) -> list[Listener]:
    out: list[Listener] = []
    try:
        for kind, numbers in wanted.items():
            if numbers is None:
                continue
            for number in [numbers] if isinstance(numbers, int) else list(numbers):
                if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 65535:
                    raise PktassertError(f"dut.listen({kind}={number!r}): give a port number (a protocol number "
                                         f"for raw) from 0 to 65535, or a list of them.")
                out.append(Listener(ns, kind, number, backlog, tracker))
    except BaseException:
        for listener in out:
            listener.close()
        raise
    return out
