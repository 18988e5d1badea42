"""Program and inspector: bcc source composed with our XDP inspector (installed as ``pktassert.bpf``)."""

from .program import LoadedProgram, Program

__all__ = ["LoadedProgram", "Program"]
