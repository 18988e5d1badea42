"""pktassert: tests for packet filters, with real namespaces, real programs and real verdicts: in pytest
(the plugin's fixtures), or without it (``pktassert.Session``)."""

from typing import Any

from pktassert import moved
from pktassert.compare import compare, search
from pktassert.device.dut import XdpUnderTest
from pktassert.device.inject import Injector
from pktassert.errors import AccountingError, InjectError, PktassertError, ProgramError
from pktassert.hooks.verdict import TcVerdict, Verdict
from pktassert.netns.topology import DUT_IP, DUT_IP6, PEER_IP, PEER_IP6
from pktassert.observers.conntrack import Ct
from pktassert.observers.fate import Fate
from pktassert.programs.bcc_program import Program
from pktassert.programs.bcc_program import Program as BccSource
from pktassert.programs.libbpf_program import LibbpfSource, ObjectFile
from pktassert.results.capture import Capture, Count, Outcome
from pktassert.results.packet_diff import Mask, expect
from pktassert.session import Dut, Session
from pktassert.traffic.source import Traffic

__all__ = ["DUT_IP", "DUT_IP6", "PEER_IP", "PEER_IP6", "AccountingError", "BccSource", "Capture", "Count", "Ct", "Dut",
           "Fate", "InjectError", "Injector", "LibbpfSource", "Mask", "ObjectFile", "Outcome", "PktassertError", "Program",
           "ProgramError", "Session", "TcVerdict", "Traffic", "Verdict", "XdpUnderTest", "compare", "expect",
           "search"]

moved.install()  # the 0.1 module names (pktassert.capture, pktassert.bpf.program, ...) still import


def __getattr__(name: str) -> Any:
    """``pktassert.strategies`` (hypothesis strategies and boundaries): imported when asked for, since
    hypothesis is a test dependency, not one of pktassert's."""
    if name == "strategies":
        from pktassert.traffic import strategies  # noqa: PLC0415 - hypothesis only for those who use it

        return strategies
    raise AttributeError(f"module 'pktassert' has no attribute {name!r}")
