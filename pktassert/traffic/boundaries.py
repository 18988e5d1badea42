"""Packets on each side of each edge a filter draws, mined from the filter itself.

An nftables rule set is loaded into a throwaway namespace and listed as JSON (numbers, not names):
every match on a header field gives, per value, range, prefix or set element, the values just
outside and just inside it (v-1, v, v+1; lo-1, lo, hi, hi+1), in packets of the shape the rule says
(a ``tcp dport`` edge: TCP to the DUT) that meet the rule's other matches, so the edge is reached.
A BPF filter (an ELF object, a libbpf or bcc C source) gives the constants its conditional jumps
compare with: ports (as written and byte-swapped: bpf_htons(23) is 0x1700), IPv4 addresses and
protocol numbers, one either side of each.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, _ICMPv6
from scapy.packet import Packet, Raw

from pktassert.build.source_check import code_only
from pktassert.errors import InjectError, ProgramError
from pktassert.frames.convert import complete
from pktassert.frames.flood import FIELDS, Flood
from pktassert.hooks.table import HOOKS
from pktassert.kernel.elf_entry import STT_FUNC, ElfObject
from pktassert.netns import UNIT_DUT, UNIT_PEER, Namespace, owner
from pktassert.programs.bcc_program import BARE_ENTRY, looks_like_path
from pktassert.programs.bcc_program import Program as BccSource
from pktassert.programs.nft_ruleset import RuleSet
from pktassert.programs.subjects import SUBJECTS, subject_of
from pktassert.traffic.source import Part, Traffic

MOST = 20_000  # packets in one boundaries() part: a filter with more constants than that is cut, and says so


@dataclasses.dataclass(frozen=True)
class Spot:
    """Where a field is in a packet: the first of ``layers`` the packet has, its scapy attribute."""

    layers: tuple[type[Packet], ...]
    attr: str
    bits: int
    family: int = 0           # 4 or 6: the field says the IP version
    proto: int | None = None  # the transport protocol the field says (tcp: 6)
    address: bool = False
    protocol: bool = False    # the field is the transport protocol: its values decide the packet's shape


def _spot(layer: type[Packet], attr: str, bits: int, family: int = 0, proto: int | None = None, **kind: bool) -> Spot:
    return Spot((layer,), attr, bits, family, proto, **kind)


# nft payload (and meta) fields -> where scapy keeps them.
NFT: dict[tuple[str, str], Spot] = {
    ("ip", "saddr"): _spot(IP, "src", 32, 4, address=True), ("ip", "daddr"): _spot(IP, "dst", 32, 4, address=True),
    ("ip", "protocol"): _spot(IP, "proto", 8, 4, protocol=True), ("ip", "ttl"): _spot(IP, "ttl", 8, 4),
    ("ip", "id"): _spot(IP, "id", 16, 4),
    ("ip6", "saddr"): _spot(IPv6, "src", 128, 6, address=True), ("ip6", "daddr"): _spot(IPv6, "dst", 128, 6, address=True),
    ("ip6", "nexthdr"): _spot(IPv6, "nh", 8, 6, protocol=True), ("ip6", "hoplimit"): _spot(IPv6, "hlim", 8, 6),
    ("meta", "l4proto"): Spot((IP, IPv6), "proto", 8, protocol=True),
    ("tcp", "sport"): _spot(TCP, "sport", 16, 0, 6), ("tcp", "dport"): _spot(TCP, "dport", 16, 0, 6),
    ("tcp", "flags"): _spot(TCP, "flags", 8, 0, 6),
    ("udp", "sport"): _spot(UDP, "sport", 16, 0, 17), ("udp", "dport"): _spot(UDP, "dport", 16, 0, 17),
    ("th", "sport"): Spot((TCP, UDP), "sport", 16), ("th", "dport"): Spot((TCP, UDP), "dport", 16),
    ("icmp", "type"): _spot(ICMP, "type", 8, 4, 1), ("icmp", "code"): _spot(ICMP, "code", 8, 4, 1),
    ("icmpv6", "type"): _spot(_ICMPv6, "type", 8, 6, 58), ("icmpv6", "code"): _spot(_ICMPv6, "code", 8, 6, 58),
}
# Match ops: whether value v meets one (inside: v is in the right-hand side; x: its first value). "in" is a
# bit mask's (tcp flags syn), taken as a value.
OPS: dict[str, Callable[[int, int, bool], bool]] = {
    "==": lambda v, x, inside: inside, "in": lambda v, x, inside: inside, "!=": lambda v, x, inside: not inside,
    "<": lambda v, x, _: v < x, "<=": lambda v, x, _: v <= x, ">": lambda v, x, _: v > x, ">=": lambda v, x, _: v >= x}
# Transport protocols: the layer a packet of each has (TCP opens a connection: SYN); others get 8 bytes.
L4: dict[int, Any] = {6: lambda: TCP(flags="S"), 17: UDP, 1: lambda: ICMP(type=8), 58: ICMPv6EchoRequest}
# BPF: conditional jumps (BPF_JMP and BPF_JMP32 classes, BPF_K source) by their op bits.
JUMPS = {0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
         0xa0: "<", 0xb0: "<=", 0xc0: "s<", 0xd0: "s<="}
JUMP_CLASSES = {0x05: "", 0x06: " (32-bit)"}
BPF_X, BPF_PSEUDO_CALL, CALL = 0x08, 1, 0x85
INSN = struct.Struct("<BBhi")  # opcode, registers, offset, immediate
# What a BPF constant is taken for, and the fields that then get it.
BPF_KINDS = {"port": (NFT["tcp", "dport"], NFT["tcp", "sport"], NFT["udp", "dport"], NFT["udp", "sport"]),
             "IPv4 address": (NFT["ip", "saddr"], NFT["ip", "daddr"]), "IP protocol": (NFT["ip", "protocol"],)}
NFT_TEXT = re.compile(r"^\s*(table|flush\s+ruleset|add\s+(table|chain|rule|set|map|element))\b", re.MULTILINE)
C_TEXT = re.compile(r"\bSEC\s*\(|#\s*include\b|\bstruct\s+(xdp_md|__sk_buff)\b")


@dataclasses.dataclass(frozen=True)
class Edge:
    """One edge: ``field`` (``tcp dport``, or for BPF ``port``) ``op`` ``value`` (``1000-1999``, a
    prefix, an address, a number), the values its packets take there, and where it was found."""

    field: str
    op: str
    value: str
    values: tuple[int | str, ...]
    where: str


class Job(NamedTuple):
    """Packets to make: IP version, protocol, other fields' values, and the field given each of ``values``."""

    family: int
    proto: int
    context: tuple[tuple[Spot, int], ...]
    spot: Spot
    values: tuple[int, ...]


Mined = list[tuple[Edge, list[Job]]]


def edges(source: Any, func: str | None = None) -> list[Edge]:
    """The edges ``boundaries()`` makes packets at (see there), without making them."""
    return [edge for edge, _ in _mine(source, func)[1]]


def boundaries(source: Any, func: str | None = None, *, template: Packet | None = None) -> Traffic:
    """Packets just inside and just outside each edge the filter draws: ``source`` is an nftables rule set
    (a .nft path or its text), a BPF ELF object (``func``: its function or section, needed if it has
    several programs), a libbpf or bcc C source (``func``: its entry), or a LibbpfSource / ObjectFile /
    BccSource. ``template``: a packet each edge's field is set in where it has that field
    (``IP(dst=...)/TCP(flags="A")``), instead of the shape the edge says. One Part, labelled with where
    it came from; at most MOST packets."""
    if template is not None and not isinstance(template, Packet):
        raise InjectError(f"boundaries(template={template!r}): a {type(template).__name__}, not a packet. Fix: a "
                          f"scapy packet, e.g. IP(dst=...)/TCP(flags=\"A\"), or none for the shapes the edges say.")
    base = None if template is None else complete(template, UNIT_PEER, UNIT_DUT)
    name, mined = _mine(source, func)
    frames: dict[bytes, None] = {}  # in order, each once
    jobs = (job for _, jobs in mined for job in jobs)
    for job in jobs:
        frames.update(dict.fromkeys(_frames(job, base)))
        if len(frames) >= MOST:  # none made past it: a program of a million instructions has as many constants
            break
    cut = f"; cut at {MOST:,} packets" if len(frames) > MOST or next(jobs, None) is not None else ""
    label = f"boundaries of {name} ({len(mined)} edge{'s' * (len(mined) != 1)}{cut})"
    return Traffic([Part(tuple(frames)[:MOST], label=label)])


def _mine(source: Any, func: str | None) -> tuple[str, Mined]:
    """(how the source is named, its edges and their packets), by what the source is."""
    if isinstance(source, SUBJECTS):
        return _bpf(source)
    if isinstance(source, (bytes, bytearray)):
        return _nft_edges(bytes(source), "the rule set text", func)
    if isinstance(source, os.PathLike) or isinstance(source, str) and looks_like_path(source):
        path = Path(source)
        try:
            data = path.read_bytes() if path.is_file() else None
        except OSError as e:
            raise ProgramError(f"boundaries({str(source)!r}): {e.strerror}. Fix: a readable file.") from None
        if data is None:
            raise ProgramError(f"boundaries({str(source)!r}): no such file ({path.absolute()}). Fix: the path of a "
                               f".nft rule set, a BPF object (.o) or a C source (.bpf.c, .c), or rule set text.")
        if data.startswith(b"\x7fELF") or path.suffix == ".o":
            return _bpf_edges(path.name, *_elf_code(data, f"{path} (ELF object)", func))
        kind = {".nft": "nft", ".c": "c"}.get(path.suffix) or _kind(data[:65536].decode("utf-8", "replace"))
        if kind is None:
            raise ProgramError(f"boundaries({str(source)!r}): neither an nftables rule set nor a BPF filter (no "
                               f"table, no ELF header, no C in it). Fix: a .nft rule set, a BPF object (.o) or a C "
                               f"source (.bpf.c, .c) with func=.")
        return _nft_edges(path, path.name, func) if kind == "nft" else _bpf(_c_source(path, func))
    if isinstance(source, str):
        return _nft_edges(source, "the rule set text", func) if _kind(source) == "nft" else _bpf(_c_source(source, func))
    raise ProgramError(f"boundaries({source!r}): a {type(source).__name__}. Fix: a .nft path or rule set text, a "
                       f"BPF object or C source path, or a LibbpfSource/ObjectFile/BccSource.")


def _kind(text: str) -> str | None:  # a rule set, C, or neither
    return "nft" if NFT_TEXT.search(text) else "c" if C_TEXT.search(text) else None


def _c_source(source: str | Path, func: str | None) -> Any:
    if func is None:
        raise ProgramError(f"boundaries({str(source)[:60]!r}) of a C source needs func=, its entry function. Fix: "
                           f"boundaries(..., func=\"name\").")
    return subject_of(source, func)


# -- nftables -------------------------------------------------------------------------------------------------


def _nft_edges(source: str | bytes | Path, name: str, func: str | None) -> tuple[str, Mined]:
    if func is not None:
        raise ProgramError(f"boundaries({name}, func={func!r}): a rule set has no functions. Fix: drop func=.")
    listing, texts = _listing(source)
    sets = {(s["family"], s["table"], s["name"]): [e[0] if isinstance(e, list) else e for e in s.get("elem", [])]
            for item in listing for s in [item.get("set") or item.get("map")] if s}  # a map's keys
    mined: Mined = []
    for rule in (item["rule"] for item in listing if "rule" in item):
        table = (rule["family"], rule["table"])
        where = (f"rule {texts.get((*table, rule['handle']), '?')!r} "
                 f"({rule['family']} {rule['table']} {rule['chain']}, handle {rule['handle']})")
        mined += _rule_edges(rule, {k[2]: s for k, s in sets.items() if k[:2] == table}, where)
    return name, mined


def _listing(source: str | bytes | Path) -> tuple[list[dict[str, Any]], dict[tuple[str, str, int], str]]:
    """The rule set as nft lists it in JSON, with numbers for names (``tcp``: 6), and each rule's text,
    from a namespace of its own: made, loaded, listed and closed here."""
    label = f"{owner.PREFIX} {owner.mark()} boundaries"
    with Namespace(label) as ns:
        ns.ipr.link("set", index=1, ifalias=label)  # marked as pktassert's, as Topology marks its namespaces
        rules = RuleSet(ns, source)  # on failure it frees its context (and netlink socket) itself
        try:
            texts, out = rules.rules(), rules.listing()
        finally:
            rules.close()  # its netlink socket would keep the namespace alive after the namespace's fd is closed
    return [item for item in out.get("nftables", []) if isinstance(item, dict)], texts


def _rule_edges(rule: Mapping[str, Any], sets: Mapping[str, list[Any]], where: str) -> Mined:
    """Each match's edges, in packets that meet the rule's other matches (so that the edge is reached)."""
    matches = []
    for e in rule.get("expr", []):
        m = e.get("match") or ({"left": e["vmap"]["key"], "right": e["vmap"]["data"], "op": "=="} if "vmap" in e else {})
        key = _field(m.get("left"))
        if key in NFT and m["op"] in OPS:
            parts = list(_elements(m["right"], sets, NFT[key]))
            if parts:
                matches.append((" ".join(key), NFT[key], m["op"], parts))
    spots = [spot for _, spot, _, _ in matches]
    context = {spot: v for _, spot, op, parts in matches for v in [_inside(spot, op, parts)] if v is not None}
    family = 6 if rule["family"] == "ip6" or rule["family"] != "ip" and 6 in {s.family for s in spots} else 4
    # The transport the rule says: a protocol match's value, a tcp/udp/icmp field's; else TCP and UDP for th.
    said = [context[s] for s in context if s.protocol] or [s.proto for s in spots if s.proto]
    protos = list(dict.fromkeys(said)) or ([6, 17] if any(s.layers == (TCP, UDP) for s in spots) else [6])
    mined: Mined = []
    for field, spot, op, parts in matches:
        others = tuple((s, v) for s, v in context.items() if s != spot)
        for lo, hi, text in parts:
            values = _around(lo, hi, spot.bits)
            jobs = [Job(family, proto, others, spot, values)
                    for proto in ([0] if spot.protocol else [spot.proto] if spot.proto else protos)]
            mined.append((Edge(field, op, text, tuple(_shown(spot, v) for v in values), where), jobs))
    return mined


def _field(left: Any) -> tuple[str, str] | None:
    """("tcp", "dport") for a payload field, ("meta", "l4proto") for a meta key; None for anything else."""
    if isinstance(left, dict) and isinstance(left.get("payload"), dict):
        return str(left["payload"].get("protocol")), str(left["payload"].get("field"))
    if isinstance(left, dict) and isinstance(left.get("meta"), dict):
        return "meta", str(left["meta"].get("key"))
    return None


def _elements(right: Any, sets: Mapping[str, list[Any]], spot: Spot) -> Iterator[tuple[int, int, str]]:
    """A right-hand side as (lo, hi, text) intervals: a value, a range, a prefix, a set, a @named set or map."""
    if isinstance(right, str) and right.startswith("@") or isinstance(right, dict) and "set" in right:
        for element in sets.get(right[1:], []) if isinstance(right, str) else right["set"]:
            yield from _elements(element, sets, spot)
    elif isinstance(right, list) or isinstance(right, dict) and "elem" in right:
        # a map's [key, verdict], or an element with its timeout, counter or comment
        yield from _elements(right[0] if isinstance(right, list) else right["elem"]["val"], sets, spot)
    elif isinstance(right, dict) and "prefix" in right:
        net = _network(f"{right['prefix']['addr']}/{right['prefix']['len']}", spot)
        if net is not None:
            yield int(net.network_address), int(net.broadcast_address), str(net)
    elif isinstance(right, dict) and "range" in right:
        lo, hi = (_number(v, spot) for v in right["range"])
        if lo is not None and hi is not None:
            yield lo, hi, f"{right['range'][0]}-{right['range'][1]}"
    else:
        v = _number(right, spot)
        if v is not None:
            yield v, v, str(right)


def _network(text: str, spot: Spot) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A prefix or an address of the field's own family; None for anything else."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net if spot.address and net.max_prefixlen == spot.bits else None


def _number(value: Any, spot: Spot) -> int | None:
    """A value as a number of the field's width; None for what is not one (a name nft kept, a concatenation)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 1 << spot.bits else None
    net = _network(value, spot)
    return int(net.network_address) if net is not None and net.num_addresses == 1 else None


def _around(lo: int, hi: int, bits: int) -> tuple[int, ...]:
    """lo-1, lo, hi, hi+1 (v-1, v, v+1 for one value), kept to the field's range."""
    return tuple(v for v in sorted({lo - 1, lo, hi, hi + 1}) if 0 <= v < 1 << bits)


def _inside(spot: Spot, op: str, parts: list[tuple[int, int, str]]) -> int | None:
    """A value that meets the match (for the packets of the rule's other edges), if one of its edges does."""
    return next((v for v in sorted({v for lo, hi, _ in parts for v in _around(lo, hi, spot.bits)})
                 if OPS[op](v, parts[0][0], any(lo <= v <= hi for lo, hi, _ in parts))), None)


def _shown(spot: Spot, v: int) -> int | str:
    return str(ipaddress.IPv4Address(v) if spot.bits == 32 else ipaddress.IPv6Address(v)) if spot.address else v


# -- BPF ------------------------------------------------------------------------------------------------------


def _bpf(subject: Any) -> tuple[str, Mined]:
    """Edges of a LibbpfSource, ObjectFile or BccSource."""
    name = Path(str(subject.source)).name if subject.is_file else "the source text"
    if isinstance(subject, BccSource):
        return _bpf_edges(name, subject.func, _bcc_code(subject))
    return _bpf_edges(name, *_elf_code(subject.build()[0], f"{subject.name} ({subject.kind})", subject.func))


def _bpf_edges(name: str, func: str, code: bytes) -> tuple[str, Mined]:
    """Edges from the constants the conditional jumps of ``code`` compare with."""
    mined: Mined = []
    seen: set[tuple[str, int]] = set()
    for n in range(len(code) // INSN.size):
        opcode, regs, _, imm = INSN.unpack_from(code, n * INSN.size)
        if opcode & 0x07 not in JUMP_CLASSES or opcode & BPF_X or opcode & 0xF0 not in JUMPS:
            continue
        c, op = imm & 0xFFFFFFFF, JUMPS[opcode & 0xF0]
        where = f"{func}() instruction {n}: if r{regs & 0xF} {op} {c:#x}{JUMP_CLASSES[opcode & 0x07]}"
        wide = c > 0xFFFF  # above any port: an IPv4 address
        for value, note in ((c, ""), (_swap(c, 4 if wide else 2), " (byte-swapped: in network order)")):
            kinds = ("IPv4 address",) if wide else ("port", "IP protocol") if value < 256 else ("port",)
            for kind, spots in ((k, BPF_KINDS[k]) for k in kinds if (k, value) not in seen):
                seen.add((kind, value))
                values = _around(value, value, spots[0].bits)
                shown = tuple(_shown(spots[0], v) for v in values)
                mined.append((Edge(kind, op, str(_shown(spots[0], value)), shown, where + note),
                              [Job(4, s.proto or 6, (), s, values) for s in spots]))
    return f"{name} {func}()", mined


def _swap(c: int, width: int) -> int:
    return int.from_bytes(c.to_bytes(width, "big"), "little")


def _elf_code(data: bytes, label: str, func: str | None) -> tuple[str, bytes]:
    """The name and instructions of ``func`` (a function, or a section with one; None: the object's only
    program), with the subprograms in .text when it calls any."""
    elf = ElfObject(data, label)
    funcs = [(name, sec, at, size) for name, info, _, sec, at, size in elf.symbols()
             if info & 0xF == STT_FUNC and 0 < sec < len(elf.sections)]
    programs = [f for f in funcs if elf.sections[f[1]].name != ".text"]
    chosen = programs if func is None else \
        [f for f in funcs if f[0] == func] or [f for f in programs if elf.sections[f[1]].name == func]
    if len(chosen) != 1:
        listing = ", ".join(f"{n}() in SEC(\"{elf.sections[s].name}\")" for n, s, _, _ in programs) or "none"
        said = f"no function {func!r} (nor a section with one program of that name)" if func else "several programs"
        raise ProgramError(f"{label} has {said}; its programs: {listing}. Fix: func= one of those function names.")
    name, sec, at, size = chosen[0]
    code = bytes(elf.sections[sec].data[at:at + size])
    calls = any(code[i] == CALL and code[i + 1] >> 4 == BPF_PSEUDO_CALL for i in range(0, len(code) - 1, INSN.size))
    text = elf.index(".text")
    return name, code + (bytes(elf.sections[text].data) if calls and text is not None and text != sec else b"")


def _bcc_code(subject: BccSource) -> bytes:
    """The filter's instructions as bcc compiles it for a test: pktassert's source with the filter inlined into
    its bare entry (the filter alone), loaded (compile errors and verifier messages as a test gets them)."""
    text = code_only(subject.text())
    ctx = {name: r"\s+".join(hook.ctx.rstrip(" *").split()) for name, hook in HOOKS.items()}  # "struct\s+xdp_md"
    hook = next((name for name, c in ctx.items()  # the hook whose context the entry takes (struct __sk_buff: tc)
                 if re.search(rf"\b{subject.func}\s*\(\s*(const\s+)?{c}\b", text)), subject.hook)
    loaded = dataclasses.replace(subject, hook=hook).load()
    try:
        return loaded.code(BARE_ENTRY)
    finally:
        loaded.close()


# -- packets --------------------------------------------------------------------------------------------------


def _frames(job: Job, template: Packet | None) -> list[bytes]:
    """The job's packets: its base packet (the template where it fits), the field set to each value."""
    if job.spot.protocol:  # each protocol number is a packet shape of its own
        return [bytes(_base(job.family, v, job.context, template)) for v in job.values]
    base = _base(job.family, job.proto, job.context, template)
    layer = _layer(base, job.spot.layers)
    if layer is None:
        return []
    if job.spot.attr in FIELDS.get(type(layer), {}):  # the flood builder: no scapy object per packet
        name = f"{type(layer).__name__}.{job.spot.attr}"
        return Flood(base, len(job.values), {name: list(job.values)}).rows_bytes(0, len(job.values))
    out = []
    for v in job.values:
        pkt = base.copy()
        setattr(_layer(pkt, job.spot.layers) or pkt, job.spot.attr, v)  # the copy has the layer the base has
        out.append(bytes(pkt))
    return out


def _base(family: int, proto: int, context: tuple[tuple[Spot, int], ...], template: Packet | None) -> Packet:
    """A packet from the peer to the DUT of this IP version and protocol (or the template, where it has
    both), the context's fields set."""
    l3 = IP(src=UNIT_PEER.ip, dst=UNIT_DUT.ip, proto=proto) if family == 4 else \
        IPv6(src=UNIT_PEER.ip6, dst=UNIT_DUT.ip6, nh=proto)
    l4 = L4[proto]() if proto in L4 else Raw(bytes(8))
    fits = template is not None and template.haslayer(type(l3)) and (proto not in L4 or template.haslayer(type(l4)))
    pkt = template.copy() if fits and template is not None else complete(l3 / l4, UNIT_PEER, UNIT_DUT)
    if fits and proto not in L4:  # a protocol the template's layers do not say: said in its IP header
        setattr(_layer(pkt, (type(l3),)), "proto" if family == 4 else "nh", proto)
    for spot, v in context:
        layer = _layer(pkt, spot.layers)
        if layer is not None and not spot.protocol:
            setattr(layer, spot.attr, _shown(spot, v))
    return pkt


def _layer(pkt: Packet, classes: tuple[type[Packet], ...]) -> Packet | None:
    """The outermost layer of one of ``classes`` (or a subclass: ICMPv6's messages) in ``pkt``."""
    return next((layer for layer in pkt.iterpayloads() if isinstance(layer, classes)), None)
