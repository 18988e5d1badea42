"""The repository's own test configuration (the plugin itself is registered through pytest11)."""

import os

import pytest

pytest_plugins = ["pytester"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    # In CI every test must run: a skip there means a privileged test silently did not.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and not hasattr(session.config, "workerinput"):
        names = ", ".join(r.nodeid for r in skipped[:5])
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped ({names}); in CI every test must run.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
