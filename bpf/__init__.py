"""Programs and the inspector (installed as ``pktassert.bpf``): bcc sources composed with inspector.c,
libbpf sources and ELF objects linked with inspector_libbpf.c; both loaded behind the same record contract."""

from .program import LoadedProgram, Program

__all__ = ["LoadedProgram", "Program"]
