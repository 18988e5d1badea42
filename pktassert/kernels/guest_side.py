"""The pytest run inside a VM: only the tests the outer run chose, each report written as a JSON line
(pytest's own serialisation, as xdist's workers send theirs) for the outer run to take in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import pytest

from pktassert.reports import kernel_identity

REPORTS_OPTION = "--pktassert-vm-reports"
SELECT_OPTION = "--pktassert-vm-select"


def add_options(group: pytest.OptionGroup) -> None:
    # Internal: set by the outer run on the command it runs in the VM.
    group.addoption(REPORTS_OPTION, metavar="FILE", help="(internal) write each test report here as JSON lines")
    group.addoption(SELECT_OPTION, metavar="FILE", help="(internal) run only the node ids listed in FILE")


class GuestSide:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.select = config.getoption("pktassert_vm_select")
        self.out: IO[str] = open(config.getoption("pktassert_vm_reports"), "w")  # noqa: SIM115 - open for the run
        identity = kernel_identity.identity()
        self._write({"kernel": identity.line(), "release": identity.release})

    def _write(self, what: dict[str, object]) -> None:
        self.out.write(json.dumps(what) + "\n")
        self.out.flush()  # a VM killed at its deadline still leaves what ran

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.select:
            wanted = set(Path(self.select).read_text().splitlines())
            items[:] = [item for item in items if item.nodeid in wanted]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self._write({"report": data})

    def pytest_unconfigure(self) -> None:
        self.out.close()
