"""One packet told so a person can act on it: its number and length, what the inspector parsed, a
scapy field line, the first bytes in hex, and for a sweep where the verdict changed."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from scapy.layers.l2 import Ether
from scapy.utils import hexdump

if TYPE_CHECKING:
    from pktassert.results.capture import Capture

HEX_BYTES = 64
# scapy's name (what where() takes) -> the record's column, of the fields shown
PARSED = {"len": "len", "ethertype": "ethertype", "vlan": "vlan_outer", "proto": "proto", "ttl": "ttl",
          "sport": "sport", "dport": "dport", "flags": "tcp_flags", "type": "icmp_type", "code": "icmp_code"}


def _address(raw: Any, l3: int) -> str:
    data = bytes(raw)
    return str(ipaddress.ip_address(data[:4] if l3 == 4 else data)) if l3 in (4, 6) else ""


def parsed(cap: Capture, pos: int) -> dict[str, Any]:
    """The fields the inspector parsed from the packet as the filter saw it (those its layers carry)."""
    one = cap[pos:pos + 1]
    r = one.records[0]
    out: dict[str, Any] = {column: int(r[column]) for name, column in PARSED.items() if one._carrier(name)[0]}
    l3 = int(r["l3"])
    if l3:
        out["src"], out["dst"] = _address(r["src"], l3), _address(r["dst"], l3)
    return out


def describe(cap: Capture, pos: int) -> dict[str, Any]:
    """JSON-ready facts about the packet at ``pos`` (for JUnit properties)."""
    frame = cap.frame(pos)
    return {"packet": int(cap.index[pos]), "length": len(frame),
            "verdict": cap.actions.name_of(int(cap.records["ret"][pos])), "parsed": parsed(cap, pos),
            "summary": Ether(frame).summary(), "first_bytes": frame[:HEX_BYTES].hex(), "prints": cap[pos].prints}


def lines(cap: Capture, pos: int) -> list[str]:
    """The packet at ``pos``, for a failure message."""
    frame = cap.frame(pos)
    fields = " ".join(f"{k}={v}" for k, v in parsed(cap, pos).items())
    out = [f"  {len(frame)} bytes; the inspector parsed: {fields}"]
    dump = hexdump(frame[:HEX_BYTES], dump=True)
    out += [f"  {line}" for line in str(dump).splitlines()]
    if len(frame) > HEX_BYTES:
        out.append(f"  ... ({len(frame) - HEX_BYTES} more bytes)")
    printed = cap[pos].prints
    if printed:
        out.append(f"  the filter printed for it: {' | '.join(printed[:5])}{' ...' if len(printed) > 5 else ''}")
    return out


def change(cap: Capture, pos: int) -> str | None:
    """Where, in send order, the verdict changed just before ``pos`` (a sweep's edge), if it did."""
    if pos == 0 or int(cap.index[pos]) - int(cap.index[pos - 1]) != 1:
        return None
    verdicts = cap.actions.from_column(cap.records["verdict"][pos - 1:pos + 1])
    if verdicts[0] == verdicts[1]:
        return None
    a, b = pos - 1, pos
    return (f"the verdict changed between #{int(cap.index[a])} (len {len(cap.frame(a))}, "
            f"{cap.actions.name_of(int(verdicts[0]))}) and #{int(cap.index[b])} (len {len(cap.frame(b))}, "
            f"{cap.actions.name_of(int(verdicts[1]))})")
