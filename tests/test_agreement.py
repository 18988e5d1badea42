"""Agreement: the example suite, unchanged, in both tiers; every packet must get the same verdict and
the same parsed fields in the unit tier (BPF_PROG_TEST_RUN) as over the veth. A disagreement is a
bug in pktassert, never noise."""

import shutil
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Fields that legitimately differ between tiers: when, and on which interface, the frame arrived.
TIER_FIELDS = {"ts_ns", "ifindex", "tag"}


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
                base = item.nodeid.replace("[live]", "").replace("[unit]", "").replace("live-", "").replace("unit-", "")
                self.runs[(base, inject.tier)] = list(inject.captures)


def test_examples_agree_packet_for_packet(pytester: pytest.Pytester) -> None:
    for f in EXAMPLES.iterdir():
        if f.suffix in (".c", ".py"):
            shutil.copy(f, pytester.path / f.name)
    shutil.copytree(EXAMPLES / "captures", pytester.path / "captures")
    recorder = Recorder()
    # In-process (the recorder reads live objects); importlib mode, as the examples may be imported already.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--import-mode=importlib", "--pktassert-tier=both",
                                          plugins=[recorder])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    tests = {base for base, _ in recorder.runs}
    assert len(tests) >= 17 and outcomes["passed"] == 2 * len(tests)

    compared = 0
    for base in sorted(tests):
        live, unit = recorder.runs[(base, "live")], recorder.runs[(base, "unit")]
        assert len(live) == len(unit), base
        for k, (a, b) in enumerate(zip(live, unit)):
            assert len(a) == len(b) == a.sent == b.sent, (base, k)
            some = range(0, len(a), max(1, len(a) // 10_000))  # the million-packet floods: a sample of frames
            assert [a.frame(i) for i in some] == [b.frame(i) for i in some], (base, k)
            differ = np.flatnonzero(a.records["verdict"] != b.records["verdict"])
            assert not len(differ), f"{base} inject #{k}: live {a[int(differ[0])]!r} but unit {b[int(differ[0])]!r}"
            for name in a.records.dtype.names:
                if name not in TIER_FIELDS:
                    same = (a.records[name] == b.records[name]).reshape(len(a), -1).all(axis=1)
                    assert same.all(), f"{base} inject #{k}: field {name} differs at packet #{np.flatnonzero(~same)[0]}"
            compared += len(a)
    assert compared > 2_000_000  # the floods included: every packet of every example test
