"""Turn what a test passes to inject() into Ethernet frames, or say clearly why it can't."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pktassert.errors import InjectError
from pktassert.netns import Endpoint

ETH_HLEN = 14


def to_frames(what: Any, src: Endpoint, dst: Endpoint) -> list[bytes]:
    """One scapy packet, frame bytes, or a list of either; packets completed with ``complete``.

    Bytes are sent exactly as given (a malformed frame must reach the filter malformed).
    """
    items = list(what) if isinstance(what, (list, tuple)) else [what]
    if not items:
        raise InjectError("inject() got an empty list. Fix: pass at least one packet.")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Packet):
            out.append(bytes(complete(item, src, dst)))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            if len(item) < ETH_HLEN:
                raise InjectError(f"item {i} is {len(item)} bytes, shorter than an Ethernet header "
                                  f"({ETH_HLEN}). Fix: pass whole frames, or scapy packets.")
            out.append(bytes(item))
        else:
            shown = repr(item)[:60]
            raise InjectError(f"item {i} is a {type(item).__name__} ({shown}), not a packet. Fix: pass scapy "
                              f"packets (e.g. IP(dst=xdp.ip)/TCP(dport=80)) or frame bytes.")
    return out


def complete(pkt: Packet, src: Endpoint, dst: Endpoint) -> Packet:
    """Fill what the test left unset with the topology's own addresses.

    Without this scapy would take addresses and MACs from the namespace it was imported in.
    """
    pkt = pkt.copy()
    if not isinstance(pkt, Ether):
        pkt = Ether() / pkt
    eth = pkt[Ether]
    eth.src = eth.fields.get("src", src.mac)
    eth.dst = eth.fields.get("dst", dst.mac)
    if IP in pkt and "src" not in pkt[IP].fields:
        pkt[IP].src = src.ip
    if IPv6 in pkt and "src" not in pkt[IPv6].fields:
        pkt[IPv6].src = src.ip6
    return pkt


def check_size(frames: Sequence[bytes] | np.ndarray, mtu: int) -> None:
    limit = mtu + ETH_HLEN
    if isinstance(frames, np.ndarray):  # a flood: every row has the template's length
        frames = frames[:1]
    for i, f in enumerate(frames):
        if len(f) > limit:
            raise InjectError(f"packet {i} is a {len(f)}-byte frame; the DUT link's MTU is {mtu} "
                              f"(frames up to {limit} bytes). Fix: shorten the payload.")
