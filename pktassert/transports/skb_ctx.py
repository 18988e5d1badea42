"""The ``struct __sk_buff`` a tc test run starts from (BPF_PROG_TEST_RUN's ctx_in), from the fields
a test sets: laid out from the running kernel's BTF, so no offset is written down here.

The kernel takes only these fields in a test run's context (net/bpf/test_run.c,
convert___skb_to_skb); any other byte must be zero.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import struct
import weakref
from typing import Any

from pktassert.build.source_check import RESERVED
from pktassert.errors import InjectError
from pktassert.kernel import btf_types, libbpf
from pktassert.programs.state_map import MapValueError, to_ctype

SETTABLE = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len", "gso_segs", "gso_size",
            "hwtstamp")


@functools.cache
def skb_type() -> Any:
    btf = btf_types.kernel()
    return btf.ctype(btf.find("__sk_buff", btf_types.STRUCT))


def context(fields: dict[str, Any]) -> bytes:
    """The context bytes for ``fields`` (mark=, priority=, cb=[...], ...)."""
    unknown = sorted(set(fields) - set(SETTABLE))
    if unknown:
        raise InjectError(f"{', '.join(f'{u}=' for u in unknown)}: a tc test run sets only these sk_buff fields: "
                          f"{', '.join(SETTABLE)}.")
    t = skb_type()
    ctx = t()
    for name, value in fields.items():
        ftype = dict((n, ft) for n, ft, *_ in t._fields_)[name]
        try:
            setattr(ctx, name, to_ctype(ftype, value, f"{name}="))
        except MapValueError as e:
            raise InjectError(str(e)) from None
    return bytes(ctx)


# -- what a program does with the VLAN tag the kernel keeps in the sk_buff ---------------------------------------
# At tc ingress the kernel has taken a frame's outer tag out into the sk_buff (vlan_present, vlan_tci, vlan_proto);
# a test run cannot put one there (SETTABLE above). A filter that reads those fields, or calls the helpers that
# work on that tag, would be run on something the live hook never shows it.

VLAN_FIELDS = ("vlan_present", "vlan_tci", "vlan_proto")
VLAN_HELPERS = {18: "bpf_skb_vlan_push", 19: "bpf_skb_vlan_pop"}  # BPF_FUNC_skb_vlan_push, _pop
TAIL_CALL = 12  # BPF_FUNC_tail_call
_INSN = struct.Struct("<BBhi")  # struct bpf_insn: code, dst_reg:4 | src_reg:4, off, imm
_SIZE = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}  # BPF_W, BPF_H, BPF_B, BPF_DW
_ARGS = frozenset(range(1, 6))
_CALLER_SAVED = frozenset(range(0, 6))


@dataclasses.dataclass(frozen=True)
class VlanUse:
    """What a program's code does with the sk_buff's own VLAN tag: the fields it reads, the helpers it calls."""

    fields: tuple[str, ...] = ()
    helpers: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.helpers)

    def __str__(self) -> str:
        """"reads skb->vlan_present and skb->vlan_tci and calls bpf_skb_vlan_pop()"."""
        said = []
        if self.fields:
            said.append("reads " + " and ".join(f"skb->{f}" for f in self.fields))
        if self.helpers:
            said.append("calls " + " and ".join(f"{h}()" for h in self.helpers))
        return " and ".join(said)


@functools.cache
def _field_spans(names: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """Each field's bytes in the running kernel's struct __sk_buff: (name, start, end)."""
    t = skb_type()
    return tuple((n, getattr(t, n).offset, getattr(t, n).offset + getattr(t, n).size) for n in names)


def scan(code: bytes, fields: tuple[str, ...] = VLAN_FIELDS) -> tuple[set[str], set[int]]:
    """The ``fields`` of struct __sk_buff that ``code`` (a program's instructions, its context in r1)
    loads from its context, and the helpers it calls, on any path it can take.

    A may-analysis over the instructions: which registers and 8-byte stack slots may hold the context
    pointer (copied, spilled and filled, passed to a subprogram), merged where paths join."""
    spans = _field_spans(fields)
    insns = [_INSN.unpack_from(code, at) for at in range(0, len(code) - 7, 8)]
    n = len(insns)
    states: dict[int, tuple[frozenset[int], frozenset[int]]] = {0: (frozenset({1}), frozenset())}
    work = [0]
    read: set[str] = set()
    helpers: set[int] = set()

    def flow(to: int, regs: frozenset[int], slots: frozenset[int]) -> None:
        if not 0 <= to < n:
            return
        old = states.get(to)
        if old is None:
            states[to] = (regs, slots)
        elif regs <= old[0] and slots <= old[1]:
            return
        else:
            states[to] = (old[0] | regs, old[1] | slots)
        work.append(to)

    while work:
        pc = work.pop()
        regs, slots = states[pc]
        op, rr, off, imm = insns[pc]
        dst, src, cls = rr & 0x0F, rr >> 4, op & 0x07
        r, s = set(regs), set(slots)
        nexts = [pc + 1]
        if cls == 0x01:  # LDX
            mode, size = op & 0xE0, _SIZE[op & 0x18]
            if src in regs and mode in (0x60, 0x80):  # BPF_MEM, BPF_MEMSX: a load from the context
                read.update(name for name, a, b in spans if off < b and off + size > a)
            if src == 10 and off in slots and size == 8 and mode == 0x60:
                r.add(dst)  # the context filled back from the stack
            else:
                r.discard(dst)
        elif cls == 0x00:  # LD: the 16-byte immediate load, or a legacy packet load (clobbers r0-r5)
            if op == 0x18:
                r.discard(dst)
                nexts = [pc + 2]
            else:
                r -= _CALLER_SAVED
        elif cls == 0x02:  # ST (immediate)
            if dst == 10:
                s.discard(off)
        elif cls == 0x03:  # STX
            if op & 0xE0 == 0xC0:  # atomic
                if dst == 10:
                    s.discard(off)
                if imm & 0x01:  # BPF_FETCH: src gets the old value
                    r.discard(src)
                if imm == 0xF1:  # BPF_CMPXCHG: r0 too
                    r.discard(0)
            elif dst == 10:
                if src in regs and op & 0x18 == 0x18:
                    s.add(off)  # the context spilled
                else:
                    s.discard(off)
        elif cls in (0x04, 0x07):  # ALU, ALU64
            if op == 0xBF and off == 0 and src in regs:  # r_dst = r_src (64-bit move)
                r.add(dst)
            else:
                r.discard(dst)
        else:  # JMP, JMP32
            kind = op & 0xF0
            if kind == 0x80:  # call
                if src == 0:
                    helpers.add(imm)
                elif src == 1:  # a subprogram: its own frame, the context in whichever arguments hold it
                    flow(pc + imm + 1, frozenset(regs & _ARGS), frozenset())
                r -= _CALLER_SAVED
            elif kind == 0x90:  # exit
                nexts = []
            elif kind == 0x00:  # ja
                nexts = [pc + (imm if cls == 0x06 else off) + 1]
            else:
                nexts = [pc + 1, pc + off + 1]
        new = (frozenset(r), frozenset(s))
        for to in nexts:
            flow(to, *new)
    return read, helpers


def program_code(loaded: Any) -> list[bytes]:
    """The instructions of the filter as loaded (without pktassert's inspector): its entry alone, as
    cost() runs it, then, when that tail-calls, every other program of its source or object."""
    bare = "pktassert_bare"
    codes: dict[str, bytes] = {}
    if hasattr(loaded, "obj"):  # libbpf: the instructions as loaded (subprograms appended, CO-RE resolved)

        lib = libbpf.lib()
        insns, count = lib["bpf_program__insns"], lib["bpf_program__insn_cnt"]
        insns.argtypes, insns.restype = [ctypes.c_void_p], ctypes.c_void_p
        count.argtypes, count.restype = [ctypes.c_void_p], ctypes.c_size_t
        p = None
        while True:
            p = lib.bpf_object__next_program(loaded.obj, p)
            if not p:
                break
            name = lib.bpf_program__name(p).decode()
            if (name == bare or not name.startswith(RESERVED)) and lib.bpf_program__fd(p) >= 0:
                codes[name] = ctypes.string_at(insns(p), count(p) * 8)
    elif hasattr(loaded, "codes"):  # bcc: each function's instructions as compiled (the filter inlined into ours)
        codes.update((name, code) for name, code in loaded.codes().items() if name == bare or not name.startswith(RESERVED))
    if bare not in codes:
        return list(codes.values())
    return [codes.pop(bare), *codes.values()]


def vlan_use(loaded: Any) -> VlanUse:
    """What the filter of ``loaded`` does with the sk_buff's VLAN tag (once per loaded program)."""
    known = _VLAN_USE.get(loaded)
    if known is None:
        codes = program_code(loaded)
        fields: set[str] = set()
        helpers: set[int] = set()
        for k, code in enumerate(codes):
            read, called = scan(code)
            fields |= read
            helpers |= called
            if k == 0 and TAIL_CALL not in called:
                break  # the entry tail-calls nothing: the other programs never run
        known = VlanUse(tuple(f for f in VLAN_FIELDS if f in fields),
                        tuple(name for h, name in sorted(VLAN_HELPERS.items()) if h in helpers))
        _VLAN_USE[loaded] = known
    return known


_VLAN_USE: weakref.WeakKeyDictionary[Any, VlanUse] = weakref.WeakKeyDictionary()
