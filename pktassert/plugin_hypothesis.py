"""Hypothesis tests over pktassert's fixtures: ``@given(...) def test(dut, inject, pkt)`` runs every example
against the test's one DUT, as a property test of a filter means to. Hypothesis would refuse such a test
(its function_scoped_fixture health check: the fixture is not made afresh per example); the plugin says
so once here instead, for the tests that ask for our fixtures only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

OURS = frozenset({"dut", "xdp", "tc", "inject", "topology", "xdp_program", "tier"})


def allow_our_fixtures(items: Sequence[pytest.Item]) -> None:
    """Suppress the health check for hypothesis tests that use pktassert's fixtures."""
    try:
        from hypothesis import HealthCheck, settings  # noqa: PLC0415 - hypothesis is optional: a test extra
    except ImportError:
        return
    for item in items:
        fn: Any = getattr(item, "obj", None)
        if getattr(fn, "hypothesis", None) is None or not OURS & set(getattr(item, "fixturenames", ())):
            continue
        # The settings @given will use (hypothesis keeps them on the test; a second @settings is refused).
        current: Any = getattr(fn, "_hypothesis_internal_use_settings", None) or settings.default
        if HealthCheck.function_scoped_fixture not in current.suppress_health_check:
            fn._hypothesis_internal_use_settings = settings(
                current, suppress_health_check=[*current.suppress_health_check, HealthCheck.function_scoped_fixture])
