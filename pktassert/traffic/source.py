"""Traffic as one value: parts (packets as given, or a flood built the same way each time), joined with ``|``.

Every subject a comparison runs gets the very same frames: a part of packets is completed as inject()
completes them (the topology's addresses), and a flood is built from its template, count, vary= and seed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from scapy.packet import Packet

from pktassert.errors import InjectError
from pktassert.frames import pcap as pcap_file
from pktassert.results.capture import Capture


@dataclasses.dataclass(frozen=True)
class Part:
    """Packets sent as given, or (``template`` set) a flood of ``count`` built from it with ``vary=``."""

    packets: tuple[Packet | bytes, ...] = ()
    template: Packet | None = None
    count: int = 0
    vary: Mapping[str, Any] | None = None
    seed: int | None = None
    label: str = "packets"  # where it came from: "office.pcap", "boundaries of edge.nft", ...

    def __len__(self) -> int:
        return self.count if self.template is not None else len(self.packets)

    def inject_args(self) -> dict[str, Any]:
        """What inject() takes to send this part."""
        if self.template is not None:
            return {"packets": self.template, "count": self.count, "vary": self.vary, "seed": self.seed}
        return {"packets": list(self.packets)}


class Traffic:
    """Packets to send through each subject alike; ``a | b`` is a's packets, then b's."""

    def __init__(self, parts: Sequence[Part] = ()) -> None:
        self.parts = tuple(p for p in parts if len(p))

    @classmethod
    def packets(cls, packets: Sequence[Packet | bytes] | Packet | bytes, label: str = "packets") -> Traffic:
        items: list[Any] = [packets] if isinstance(packets, (Packet, bytes, bytearray)) else list(packets)
        for i, p in enumerate(items):
            if not isinstance(p, (Packet, bytes, bytearray)):
                raise InjectError(f"traffic: item {i} is a {type(p).__name__}, not a packet. Fix: scapy packets "
                                  f"(IP(dst=...)/TCP(...)) or frame bytes.")
        return cls([Part(tuple(bytes(p) if isinstance(p, bytearray) else p for p in items), label=label)])

    @classmethod
    def flood(cls, template: Packet, count: int, vary: Mapping[str, Any] | None = None,
              seed: int | None = None) -> Traffic:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InjectError(f"traffic: count={count!r}: give how many packets, a whole number from 1.")
        return cls([Part(template=template, count=count, vary=dict(vary) if vary else None, seed=seed,
                         label=f"flood of {count:,}")])

    @classmethod
    def pcap(cls, path: str | os.PathLike[str]) -> Traffic:
        frames, _ = pcap_file.read(path)
        return cls([Part(tuple(frames), label=os.path.basename(os.fspath(path)))])

    @classmethod
    def of(cls, value: Any) -> Traffic:
        """Traffic from what a test has at hand: Traffic, a Capture (the packets it sent), packets, bytes."""
        if isinstance(value, Traffic):
            return value
        if isinstance(value, Capture):
            frames = tuple(value._frame(i) for i in range(value.sent))  # every packet sent, not only those kept
            return cls([Part(frames, label=f"the {value.sent:,} packets of a capture")])
        if isinstance(value, (str, os.PathLike)):
            raise InjectError(f"traffic={value!r}: a path is not traffic. Fix: Traffic.pcap({value!r}) for a "
                              f"capture file.")
        return cls.packets(value)

    def __or__(self, other: Any) -> Traffic:
        return Traffic([*self.parts, *Traffic.of(other).parts])

    def __ror__(self, other: Any) -> Traffic:
        return Traffic([*Traffic.of(other).parts, *self.parts])

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[Part]:
        return iter(self.parts)

    def __repr__(self) -> str:
        return f"<Traffic {len(self):,} packets: {' | '.join(p.label for p in self.parts) or 'none'}>"
