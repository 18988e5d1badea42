"""A filter the 6.1 verifier rejects and newer ones accept (row_lookup.bpf.c), run by
tests/test_kernel_matrix.py on several kernels at once."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktassert import LibbpfSource, Verdict

HERE = Path(__file__).parent


@pytest.fixture
def xdp_program():
    return LibbpfSource(HERE / "row_lookup.bpf.c", "row_lookup")


def test_long_frames_pass(xdp, inject):
    out = inject(Ether() / IP(dst="192.0.2.1") / UDP(dport=53) / (b"x" * 100), count=3)
    assert out.verdicts == [Verdict.PASS] * 3
