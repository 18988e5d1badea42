"""The plugin's side of what the host lacks: a skip naming it (a failure under --pktassert-require),
a header line, and a build cache of the run's own where the default place is not writable."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from pktassert.build import build_cache, cache_dir, cache_upkeep
from pktassert.machine import host, preflight
from pktassert.observers import printk


def as_skip(item: pytest.Item, report: pytest.TestReport, lacks: host.HostLacks) -> None:
    """Not the filter's failure: a skip naming what the host lacks, or a failure under --pktassert-require."""
    msg = f"pktassert cannot run this test here: {lacks}"
    if hasattr(report, "wasxfail"):  # not the expected failure: the test never ran
        del report.wasxfail
    if item.config.getoption("pktassert_require"):
        report.outcome = "failed"
        report.longrepr = msg + " (--pktassert-require is set)"
    else:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), (item.location[1] or 0) + 1, "Skipped: " + msg)


class HostHooks:
    def __init__(self, config: pytest.Config) -> None:
        self.temp_cache: str | None = None
        self.cache_problem: str | None = None
        if hasattr(config, "workerinput"):
            return  # the controller decided; its choice is in the environment
        where = build_cache.directory()
        found = build_cache.problem(where)
        if found is None:
            return
        why, distrust = found
        if distrust and (config.getoption("pktassert_cache_dir") or os.environ.get(build_cache.ENV)):
            raise pytest.UsageError(cache_dir.refusal(where, why, f"--pktassert-cache-dir (or ${build_cache.ENV})"))
        # Not writable (a read-only home), or the default place is another user's (sudo -E): a cache for
        # this run and its xdist workers only, said in the header.
        self.cache_problem = why
        self.temp_cache = str(build_cache.private_folder())
        os.environ[build_cache.ENV] = self.temp_cache
        config.issue_config_time_warning(build_cache.CacheWarning(self._moved()), stacklevel=2)

    def _moved(self) -> str:
        return (f"pktassert: the build cache cannot be used ({self.cache_problem}); this run keeps a temporary one in "
                f"{self.temp_cache}, removed at its end (compiles are not kept across runs). "
                f"Fix: --pktassert-cache-dir or ${build_cache.ENV}: a folder of yours on a writable disk.")

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """What killed runs left: build temporaries, tracefs instances; once per run (in the controller)."""
        if hasattr(session.config, "workerinput"):
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        with contextlib.suppress(OSError):
            # In a VM of --pktassert-kernel the cache is the outer run's: so is its upkeep (see unconfigure).
            swept = [] if self._in_vm(session.config) else cache_upkeep.leftovers()
            if swept and reporter:
                reporter.write_line(f"pktassert: removed {len(swept)} temporary build file(s) of killed runs "
                                    f"({', '.join(map(str, swept[:3]))}{', ...' if len(swept) > 3 else ''})",
                                    yellow=True)
        if preflight.missing_caps():
            return
        try:
            gone = printk.clean_leftovers()
        except (host.HostLacks, OSError):
            return  # no tracefs here: nothing of ours can be in it
        for name in gone:
            if reporter:
                reporter.write_line(f"pktassert: removed the tracefs instance {name} of a killed run", yellow=True)

    @staticmethod
    def _in_vm(config: pytest.Config) -> bool:
        return bool(config.getoption("pktassert_vm_reports", default=None))

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = []
        if self.temp_cache:
            lines.append(self._moved())
        if preflight.problems():
            return lines  # every live test skips, saying why
        try:
            lacking = [name for name in (*host.NEEDS, *host.KERNEL_FEATURES) if host.problem(name)]
        except host.HostLacks as e:  # the BTF is there but libbpf cannot read it
            lacking = [e.need]
        if lacking:
            lines.append(f"pktassert: this host lacks {', '.join(lacking)}: the tests that need them skip, "
                         f"each saying why and the fix")
        return lines

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # In a VM of --pktassert-kernel the cache is the outer run's over 9p, where a stat of each file costs
        # milliseconds under TCG (68 s for this repository's cache): the outer run keeps it.
        if not hasattr(config, "workerinput") and not self.temp_cache and not self._in_vm(config):
            with contextlib.suppress(OSError, build_cache.CacheRefused):
                cache_upkeep.evict()  # bounded: the least recently used entries go
        if self.temp_cache:
            shutil.rmtree(self.temp_cache, ignore_errors=True)
            os.environ.pop(build_cache.ENV, None)
