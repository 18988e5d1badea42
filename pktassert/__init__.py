"""pktassert: tests for packet filters, with real namespaces, real programs and real verdicts: in pytest
(the plugin's fixtures), or without it (``pktassert.Session``)."""

from pktassert.bpf.libbpf_program import LibbpfSource, ObjectFile
from pktassert.bpf.program import Program
from pktassert.bpf.program import Program as BccSource
from pktassert.capture import Capture, Count, Outcome
from pktassert.dut import XdpUnderTest
from pktassert.errors import AccountingError, InjectError, PktassertError, ProgramError
from pktassert.fate import Fate
from pktassert.inject import Injector
from pktassert.packet_diff import Mask, expect
from pktassert.session import Dut, Session
from pktassert.verdict import TcVerdict, Verdict

__all__ = ["AccountingError", "BccSource", "Capture", "Count", "Dut", "Fate", "InjectError", "Injector", "LibbpfSource",
           "Mask", "ObjectFile", "Outcome", "PktassertError", "Program", "ProgramError", "Session", "TcVerdict", "Verdict",
           "XdpUnderTest", "expect"]
