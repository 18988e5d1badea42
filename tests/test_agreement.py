"""Agreement: the example suite, unchanged, in both tiers; every packet must get the same verdict and
the same parsed fields in the unit tier (BPF_PROG_TEST_RUN) as over the veth, and the same in each
form of a filter (bcc source, libbpf source, the object its Makefile built). A disagreement is a bug
in pktassert, never noise."""

from pathlib import Path

import numpy as np
import pytest
from suite_files import copy_examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Fields that legitimately differ between tiers: when, and on which interface, the frame arrived.
TIER_FIELDS = {"ts_ns", "ifindex", "tag"}
FORMS = ("bcc", "libbpf", "object")  # examples/test_port_blocklist.py runs each test on each form


def _same(a, b, what: str) -> None:
    """Two Captures of the same packets: the same frames, verdicts and parsed fields."""
    assert len(a) == len(b) == a.sent == b.sent, what
    some = range(0, len(a), max(1, len(a) // 10_000))  # the million-packet floods: a sample of frames
    assert [a.frame(i) for i in some] == [b.frame(i) for i in some], what
    differ = np.flatnonzero(a.records["verdict"] != b.records["verdict"])
    assert not len(differ), f"{what}: {a[int(differ[0])]!r} but {b[int(differ[0])]!r}"
    for name in a.records.dtype.names:
        if name not in TIER_FIELDS:
            same = (a.records[name] == b.records[name]).reshape(len(a), -1).all(axis=1)
            assert same.all(), f"{what}: field {name} differs at packet #{np.flatnonzero(~same)[0]}"


def _without_tier(nodeid: str) -> str:
    """The test's id without its tier: "t.py::f[bcc-live]" -> "t.py::f[bcc]", "t.py::f[unit]" -> "t.py::f"."""
    name, _, params = nodeid.partition("[")
    kept = [p for p in params.rstrip("]").split("-") if p not in ("live", "unit")] if params else []
    return name + (f"[{'-'.join(kept)}]" if kept else "")


class Recorder:
    """Keeps every Capture each test's inject() returned, by test and tier."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], list] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        try:
            return (yield)
        finally:
            inject = item.funcargs.get("inject")
            if inject is not None:
                base = _without_tier(item.nodeid)
                self.runs[(base, inject.tier)] = list(inject.captures)


def test_examples_agree_packet_for_packet(pytester: pytest.Pytester) -> None:
    copy_examples(pytester.path)
    recorder = Recorder()
    # In-process (the recorder reads live objects); importlib mode, as the examples may be imported already.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--import-mode=importlib", "--pktassert-tier=both",
                                          plugins=[recorder])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] == len(recorder.runs)  # every test that injected, once per tier it ran in
    # Tests that pin their tier (a unit-only sk_buff mark) run once; all others in both.
    tests = {base for base, tier in recorder.runs if tier == "live" and (base, "unit") in recorder.runs}
    single = {base for base, _ in recorder.runs} - tests
    # The DUT's whole stack (nftables, sockets, fates) has no unit tier: those examples run live only.
    whole_stack = {b for b in single if "edge_firewall" in b or "never_reaches_the_app" in b}
    assert len(tests) >= 40 and len(whole_stack) == 5 and len(single - whole_stack) <= 2

    compared = 0
    for base in sorted(tests):
        live, unit = recorder.runs[(base, "live")], recorder.runs[(base, "unit")]
        assert len(live) == len(unit), base
        for k, (a, b) in enumerate(zip(live, unit)):
            _same(a, b, f"{base} inject #{k}, live vs unit")
            compared += len(a)
    assert compared > 2_000_000  # the floods included: every packet of every example test

    # The libbpf source and the object give what the bcc source gives, packet for packet, in each tier.
    forms = 0
    for base in sorted(b for b in tests if b.endswith("[bcc]")):
        for tier in ("live", "unit"):
            reference = recorder.runs[(base, tier)]
            for form in FORMS[1:]:
                other = recorder.runs[(base.replace("[bcc]", f"[{form}]"), tier)]
                assert len(other) == len(reference), (base, form)
                for k, (a, b) in enumerate(zip(reference, other)):
                    _same(a, b, f"{base} inject #{k} ({tier}), bcc vs {form}")
                    forms += len(a)
    assert forms > 4_000_000  # the port blocklist's tests, its million-packet scan among them
