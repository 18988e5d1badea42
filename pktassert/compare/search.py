"""search(A, B, strategy): hypothesis looks for a packet that A and B answer differently, fast in the unit
tier (both loaded once, one test run each per example), shrinks it to the simplest such packet, and
replays that one packet live, through the DUT's stack, for the answers a real host would give."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from pktassert.compare.diff import Diff
from pktassert.compare.run import _pair, compare, unit_key
from pktassert.compare.sides import resolved
from pktassert.errors import PktassertError
from pktassert.session import Session


def search(a: Any, b: Any, strategy: Any, *, func: str | Sequence[str | None] | None = None,
           hook: str | Sequence[str] = "xdp", cflags: Sequence[str] = (), max_examples: int = 1000,
           replay: str | None = "live") -> Diff:
    """The simplest packet ``strategy`` can make that A and B answer differently, as a Diff of that one
    packet in the ``replay`` tier ("live", "unit", or None for the unit tier's own answers); an empty
    Diff (of no packet) when none was found in ``max_examples``. Both sides must be BPF filters (a rule
    set has no unit tier: compare() it over generated Traffic instead)."""
    try:
        from hypothesis import HealthCheck, find, settings  # noqa: PLC0415 - hypothesis is optional: a test extra
        from hypothesis.errors import NoSuchExample  # noqa: PLC0415 - as above
    except ImportError:
        raise PktassertError("search() needs hypothesis. Fix: pip install hypothesis (the test extra).") from None
    funcs, hooks = _pair(func, "func"), _pair(hook, "hook")
    with contextlib.ExitStack() as stack:
        sides = [stack.enter_context(resolved(x, f, h, tuple(cflags))) for x, f, h in zip((a, b), funcs, hooks)]
        if any(s.kind == "nftables" for s in sides):
            raise PktassertError("search(): a rule set is judged by the kernel's stack, which the unit tier does "
                                 "not have. Fix: compare(a, b, traffic) over Traffic.flood(...) or boundaries(...).")
        # One session each: both DUTs stay open while hypothesis tries its examples.
        duts = [stack.enter_context(stack.enter_context(Session(tier="unit")).dut(**s.dut_args(), fates=False))
                for s in sides]
        same = sides[0].kind == sides[1].kind

        def answer(dut: Any, pkt: Any) -> int:
            return int(unit_key(dut.inject(pkt), same)[0])

        def differs(pkt: Any) -> bool:
            return answer(duts[0], pkt) != answer(duts[1], pkt)

        try:
            found = find(strategy, differs, settings=settings(max_examples=max_examples, database=None, deadline=None,
                                                              suppress_health_check=list(HealthCheck)))
        except NoSuchExample:
            found = None
    packets = [] if found is None else [found]
    if not packets:
        return Diff(str(a), str(b), replay or "unit", [], [], [], "no difference found")
    return compare(a, b, packets, func=func, hook=hook, tier=replay or "unit", cflags=cflags)
