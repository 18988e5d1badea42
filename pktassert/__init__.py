"""pktassert: pytest tests for packet filters, with real namespaces, real programs and real verdicts."""

from pktassert.bpf.program import Program
from pktassert.capture import Capture, Count, Outcome
from pktassert.errors import AccountingError, InjectError, PktassertError, ProgramError
from pktassert.verdict import Verdict

__all__ = ["AccountingError", "Capture", "Count", "InjectError", "Outcome", "PktassertError", "Program",
           "ProgramError", "Verdict"]
