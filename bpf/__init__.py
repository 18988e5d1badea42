"""The BPF C programs (installed as ``pktassert.bpf``): the inspectors composed with users' filters, the
traffic engine, receiver, tag mover and fate tracker, and the headers that define the records they emit.
No Python here but where the files are: the code that builds and loads them is pktassert's."""

from pathlib import Path

DIR = Path(__file__).resolve().parent  # the C sources and headers
