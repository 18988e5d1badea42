"""The fault matrix: real pytest runs of the target suite (tests/kill_targets/) killed at each phase, by
SIGKILL, SIGTERM and SIGINT of pytest and SIGKILL of an xdist worker; after each, nothing of the run may
be left (processes, tracefs instances, namespaces, the root namespace, mounts, the build cache's
temporaries, TMPDIR, half-written evidence), and a second run in the same places must pass.

`make test` runs a slice: every phase once (12 runs, SLICE). The whole matrix
(4 kinds x 12 phases = 48 runs) runs with PKTASSERT_KILLS=full; PKTASSERT_KILLS_REPORT=<file> collects
each case's figures (JSON lines)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from kill_matrix import KINDS, Case, before, end_stragglers, kinds_of, listing, record

from pktassert.machine import faults

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, BPF, tracefs"),
              pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang: the target suite builds a libbpf "
                                                                        "filter (make setup installs it)")]
PHASES = list(faults.PHASES)
FULL = os.environ.get("PKTASSERT_KILLS") == "full"
# The slice: every phase once; SIGKILL where files are half made (no teardown runs), the orderly kills
# (SIGTERM, SIGINT) where state is held in the kernel, a worker's death across the run.
SLICE = {"compile": "SIGKILL", "cache write": "worker SIGKILL", "link": "SIGKILL", "load": "SIGTERM",
         "attach": "SIGINT", "nft load": "SIGTERM", "trace": "SIGINT", "fates": "worker SIGKILL", "printk": "SIGKILL",
         "flood": "SIGINT", "evidence write": "SIGKILL", "teardown": "worker SIGKILL"}
CASES = [(kind, phase) for kind in KINDS for phase in PHASES] if FULL else [(k, p) for p, k in SLICE.items()]
# How the killed run ends: SIGKILL, at once; SIGTERM and SIGINT, as Ctrl-C (teardown ran: exit code 2);
# a worker's SIGKILL, the run goes on without it and fails the test it ran ("crashed").
ENDS = {"SIGKILL": -9, "SIGTERM": 2, "SIGINT": 2, "worker SIGKILL": 1}


def test_every_failpoint_names_a_function_that_is_there():
    for phase, places in faults.PHASES.items():
        for where in places:
            holder, name = faults.resolve(where)
            assert callable(getattr(holder, name)), f"{phase}: {where}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """A whole run's build cache, by kind of entry: what a killed run's cache may hold."""
    case = Case(tmp_path_factory.mktemp("reference"))
    b = before()
    rc, out, token = case.run()
    assert rc == 0, out[-4000:]
    kinds = kinds_of(listing(case.cache))
    left = {k: v for k, v in case.left(token, b, kinds).items() if v and "advisory" not in k}
    assert not left, f"a run that was not killed left: {left}"
    return kinds


@pytest.mark.parametrize(("kind", "phase"), CASES, ids=[f"{k}-at-{p}".replace(" ", "_") for k, p in CASES])
def test_a_run_killed_at_a_phase_leaves_nothing_and_the_next_passes(kind: str, phase: str, reference: set[str],
                                                                    tmp_path) -> None:
    case = Case(tmp_path)
    sig, whom = KINDS[kind]
    state = before()
    t0 = time.monotonic()
    rc, out, token = case.run((phase, sig, whom))
    fired = json.loads(case.fired.read_text()) if case.fired.exists() else None
    found = case.left(token, state, reference)
    t1 = time.monotonic()
    rc2, out2, token2 = case.run()
    stragglers = end_stragglers(token2)
    left = {k: v for k, v in found.items() if v and "advisory" not in k}
    record({"kind": kind, "phase": phase, "fired": fired, "rc": rc, "left": found, "second_rc": rc2,
            "killed_s": round(t1 - t0, 1), "second_s": round(time.monotonic() - t1, 1)})
    assert fired, f"the failpoint of {phase!r} never fired: the target suite did not reach it\n{out[-3000:]}"
    assert rc == ENDS[kind], out[-3000:]
    assert not left, f"{kind} at {phase} left: {json.dumps(left, indent=1)}"
    assert rc2 == 0, f"the run after {kind} at {phase} failed:\n{out2[-4000:]}"
    assert stragglers == [], f"the run after {kind} at {phase} left processes: {stragglers}"
