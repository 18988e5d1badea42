"""Where modules were before pktassert/ was laid out in folders (0.1: pktassert.capture, pktassert.bpf.program,
...): the old names still import, as the modules they became, for a release; new code imports the new names."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

MOVED = {
    "pktassert.accounting": "pktassert.transports.accounting",
    "pktassert.assertion": "pktassert.results.assertion",
    "pktassert.bpf.btf_types": "pktassert.kernel.btf_types",
    "pktassert.bpf.build_cache": "pktassert.build.build_cache",
    "pktassert.bpf.cache_dir": "pktassert.build.cache_dir",
    "pktassert.bpf.cache_upkeep": "pktassert.build.cache_upkeep",
    "pktassert.bpf.compile_check": "pktassert.build.compile_check",
    "pktassert.bpf.diagnostics": "pktassert.build.diagnostics",
    "pktassert.bpf.elf_entry": "pktassert.kernel.elf_entry",
    "pktassert.bpf.fate_tracker": "pktassert.instruments.fate_tracker",
    "pktassert.bpf.fd_table": "pktassert.kernel.fd_table",
    "pktassert.bpf.hooks": "pktassert.hooks.table",
    "pktassert.bpf.libbpf": "pktassert.kernel.libbpf",
    "pktassert.bpf.libbpf_build": "pktassert.build.libbpf_build",
    "pktassert.bpf.libbpf_program": "pktassert.programs.libbpf_program",
    "pktassert.bpf.loaded": "pktassert.programs.loaded",
    "pktassert.bpf.map_reset": "pktassert.kernel.map_reset",
    "pktassert.bpf.object_check": "pktassert.build.object_check",
    "pktassert.bpf.prints": "pktassert.build.prints",
    "pktassert.bpf.program": "pktassert.programs.bcc_program",
    "pktassert.bpf.receiver": "pktassert.instruments.receiver",
    "pktassert.bpf.sender": "pktassert.instruments.sender",
    "pktassert.bpf.skb_ctx": "pktassert.transports.skb_ctx",
    "pktassert.bpf.source_check": "pktassert.build.source_check",
    "pktassert.bpf.tag_mover": "pktassert.instruments.tag_mover",
    "pktassert.bpf.test_run": "pktassert.kernel.test_run",
    "pktassert.bpf.xdp_attachments": "pktassert.instruments.xdp_attachments",
    "pktassert.capture": "pktassert.results.capture",
    "pktassert.capture_fates": "pktassert.results.capture_fates",
    "pktassert.checksums": "pktassert.frames.checksums",
    "pktassert.collect": "pktassert.observers.collect",
    "pktassert.conntrack_stats": "pktassert.kernel.conntrack_stats",
    "pktassert.dut": "pktassert.device.dut",
    "pktassert.egress_path": "pktassert.transports.egress",
    "pktassert.engine_path": "pktassert.transports.engine",
    "pktassert.events": "pktassert.programs.events",
    "pktassert.evidence": "pktassert.reports.evidence",
    "pktassert.fate": "pktassert.observers.fate",
    "pktassert.fate_reader": "pktassert.observers.fate_reader",
    "pktassert.faults": "pktassert.machine.faults",
    "pktassert.flood": "pktassert.frames.flood",
    "pktassert.globals_view": "pktassert.programs.globals_view",
    "pktassert.host": "pktassert.machine.host",
    "pktassert.inject": "pktassert.device.inject",
    "pktassert.listeners": "pktassert.device.listeners",
    "pktassert.live_outputs": "pktassert.observers.live_outputs",
    "pktassert.live_path": "pktassert.transports.live",
    "pktassert.nft_ruleset": "pktassert.programs.nft_ruleset",
    "pktassert.nft_trace": "pktassert.observers.nft_trace",
    "pktassert.offender": "pktassert.results.offender",
    "pktassert.outputs": "pktassert.observers.outputs",
    "pktassert.packet_diff": "pktassert.results.packet_diff",
    "pktassert.path": "pktassert.transports.path",
    "pktassert.payload_match": "pktassert.results.payload_match",
    "pktassert.pcap": "pktassert.frames.pcap",
    "pktassert.preflight": "pktassert.machine.preflight",
    "pktassert.printk": "pktassert.observers.printk",
    "pktassert.program_cache": "pktassert.device.program_cache",
    "pktassert.reaper": "pktassert.machine.reaper",
    "pktassert.record": "pktassert.instruments.record",
    "pktassert.stages": "pktassert.device.stages",
    "pktassert.state_map": "pktassert.programs.state_map",
    "pktassert.subjects": "pktassert.programs.subjects",
    "pktassert.tracefs": "pktassert.kernel.tracefs",
    "pktassert.unit_path": "pktassert.transports.unit",
    "pktassert.verdict": "pktassert.hooks.verdict",
    "pktassert.wire": "pktassert.frames.wire",
}


class _Alias(importlib.abc.Loader):
    """Gives the module an old name stands for (the same module object: one set of classes)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already run under its own name


class _OldNames(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, _OldNames) for f in sys.meta_path):
        sys.meta_path.append(_OldNames())  # last: a name that exists is always found first
