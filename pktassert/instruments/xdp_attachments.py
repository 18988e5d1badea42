"""Where one of pktassert's own XDP programs (receiver, tag mover) is attached, to take it off again."""

from __future__ import annotations

import contextlib

from pktassert.netns import Namespace


class XdpAttachments:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._on: list[tuple[Namespace, int]] = []

    def attach(self, ns: Namespace, ifindex: int) -> None:
        """Native XDP on ``ifindex`` in ``ns``, through the namespace's own netlink socket."""
        ns.ipr.link("set", index=ifindex, xdp_fd=self.fd)
        self._on.append((ns, ifindex))

    def detach(self) -> None:
        """Off every interface it is still on (a closed namespace took it already)."""
        while self._on:
            ns, ifindex = self._on.pop()
            if ns.fd >= 0 and not ns.stopped:  # stopped: its links are down, the kernel removes it with them
                with contextlib.suppress(Exception):
                    ns.ipr.link("set", index=ifindex, xdp_fd=-1)
