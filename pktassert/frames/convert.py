"""Turn what a test passes to inject() into Ethernet frames, or say clearly why it can't."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot3, Ether
from scapy.packet import Packet

from pktassert.errors import InjectError
from pktassert.netns import Endpoint

ETH_HLEN = 14
VLAN_HLEN = 4
VLAN_TPIDS = (0x8100, 0x88A8)  # 802.1Q and 802.1ad tags: the ones the kernel (eth_type_vlan) and the inspector know
FRAMINGS = (Ether, Dot3)  # bottom layers that are Ethernet frames already (Dot3: 802.3 with a length field)


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
    if not isinstance(pkt, FRAMINGS):
        pkt = Ether() / pkt
        if pkt.type == Ether().type:  # scapy's Ether binds no EtherType to it: it would go out as 0x9000
            name = type(pkt.payload).__name__
            raise InjectError(f"inject() got a {name} packet ({pkt.payload.summary()}): it is not an Ethernet "
                              f"frame, and scapy's Ether carries no {name} (it would send it with EtherType "
                              f"0x{Ether().type:04x}, a loopback test frame). Fix: put Ether()/ at the bottom "
                              f"(Ether()/IP()/..., Ether(type=...)/... for another EtherType), or start at a "
                              f"layer Ether carries, such as IP, IPv6, ARP or Dot1Q; or pass the frame as bytes.")
    pkt.src = pkt.fields.get("src", src.mac)
    pkt.dst = pkt.fields.get("dst", dst.mac)
    # Every IP header, inner ones in tunnels too: scapy would pick a source from the host's routes.
    addresses = {IP: src.ip, IPv6: src.ip6}
    for header in pkt.iterpayloads():
        if type(header) in addresses and header.fields.get("src") is None:
            header.src = addresses[type(header)]
    return pkt


def l3_offset(frame: bytes) -> int:
    """Where the network header starts: after the Ethernet header and any VLAN tags."""
    head = ETH_HLEN
    while len(frame) >= head + VLAN_HLEN and int.from_bytes(frame[head - 2:head], "big") in VLAN_TPIDS:
        head += VLAN_HLEN
    return head


def check_size(frames: Sequence[bytes] | np.ndarray, mtu: int) -> None:
    """Refuse frames the DUT link would drop: the MTU limits the packet after the Ethernet header and
    any VLAN tags, and the veth takes frames up to mtu + 14 + 4 (the kernel's is_skb_forwardable)."""
    if isinstance(frames, np.ndarray):  # a flood: every row has the template's length (varied sizes are checked apart)
        frames = frames[:1]
    for i, f in enumerate(frames):
        head = l3_offset(bytes(f))
        tags = (head - ETH_HLEN) // VLAN_HLEN
        payload, most = len(f) - head, mtu + ETH_HLEN + VLAN_HLEN
        if payload <= mtu and len(f) <= most:
            continue
        said = f"packet {i} is a {len(f)}-byte frame; the DUT link's MTU is {mtu}"
        if payload > mtu:
            after = "the Ethernet header" + (f" and {tags} VLAN tag{'s' * (tags > 1)}" if tags else "")
            raise InjectError(f"{said}, and the frame has {payload} bytes after {after}, {_over(payload - mtu)} "
                              f"the MTU. Fix: shorten the payload by {_count(payload - mtu)}.")
        raise InjectError(f"{said}, which takes frames up to {most} bytes (the MTU, the 14-byte Ethernet "
                          f"header and one 4-byte VLAN tag); this one's {tags} VLAN tags make it "
                          f"{_over(len(f) - most)} that. Fix: fewer VLAN tags, or a shorter payload.")


def _over(n: int) -> str:
    return f"{_count(n)} over"


def _count(n: int) -> str:
    return f"{n} byte{'s' * (n > 1)}"
