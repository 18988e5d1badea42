"""Two versions of a filter (or a filter and a rule set claiming the same policy) on the same packets: what differs."""

from pktassert.compare.diff import Answer, Diff, DiffClass
from pktassert.compare.run import compare
from pktassert.compare.search import search
from pktassert.compare.sides import Side

__all__ = ["Answer", "Diff", "DiffClass", "Side", "compare", "search"]
