"""The veth between peer and DUT as a transport meets it: the longest frame it lets through now."""

from __future__ import annotations

import numpy as np

from pktassert.frames.wire import Wire
from pktassert.instruments.record import const
from pktassert.netns import Endpoint


def link_mtu(end: Endpoint) -> int:
    """The MTU of ``end``'s link now (a test may change it)."""
    return int(end.netns.ipr.get_links(end.ifindex)[0].get_attr("IFLA_MTU"))


def frame_limit(end: Endpoint) -> int:
    """The longest frame as crafted that ``end``'s veth lets through now: MTU plus Ethernet header plus
    one VLAN tag (the kernel's is_skb_forwardable), less pktassert's trailer."""
    return link_mtu(end) + 14 + 4 - const("TRAILER_LEN")


def too_long(end: Endpoint, wire: Wire) -> tuple[np.ndarray, int]:
    """Which frames of ``wire`` the veth into ``end`` would drop for their length now, and the limit."""
    limit = frame_limit(end)
    return wire.lengths - const("TRAILER_LEN") > limit, limit
