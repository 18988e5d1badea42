"""Whether a filter prints (bpf_trace_printk, bpf_printk): then our inspector marks the start of
each packet in the trace, so that the filter's own lines can be tied to the packet that printed
them (pktassert/observers/printk.py). A source is read for the call; an object's code for the helper call."""

from __future__ import annotations

import re
import struct

from pktassert.kernel.elf_entry import SHF_EXECINSTR, ElfObject

SOURCE = re.compile(r"\b(bpf_trace_printk|bpf_printk|__bpf_printk|bpf_trace_vprintk|__bpf_vprintk)\b")
HELPERS = {6, 177}  # BPF_FUNC_trace_printk, BPF_FUNC_trace_vprintk
_INSN = struct.Struct("<BBhi")
CALL = 0x85


def in_source(text: str) -> bool:
    return SOURCE.search(text) is not None


def in_object(data: bytes, label: str) -> bool:
    for sec in ElfObject(data, label).sections:
        if not sec.flags & SHF_EXECINSTR:
            continue
        code = bytes(sec.data)
        for at in range(0, len(code) - 7, 8):
            op, regs, _, imm = _INSN.unpack_from(code, at)
            if op == CALL and regs >> 4 == 0 and imm in HELPERS:  # src_reg 0: a helper, not a subprogram
                return True
    return False
