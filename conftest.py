"""The repository's own test configuration (the plugin itself is registered through pytest11)."""

import os

import pytest

pytest_plugins = ["pytester"]
ROOT_BEFORE = pytest.StashKey[dict]()


def pytest_sessionstart(session: pytest.Session) -> None:
    # The whole run must leave the root namespace as it was: compared again at the end.
    if not hasattr(session.config, "workerinput") and os.geteuid() == 0:
        from pktassert.netns.snapshot import snapshot

        session.config.stash[ROOT_BEFORE] = snapshot()


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(ROOT_BEFORE, None)
    if before is not None:
        from pktassert.netns.snapshot import differences, snapshot

        changed = differences(before, snapshot())
        if changed:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            reporter.write_line("the run changed the root network namespace: " + "; ".join(changed[:10]), red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # In CI every test must run: a skip there means a privileged test silently did not.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and not hasattr(session.config, "workerinput"):
        names = ", ".join(r.nodeid for r in skipped[:5])
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped ({names}); in CI every test must run.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "container: tests/test_container.py, run by `make container-test` only")
    config.addinivalue_line("markers", "tail_port(port): tests/test_libbpf_filters.py: the .rodata port that "
                                       "takes the tail call")
    config.addinivalue_line("markers", "first: a long test (VMs) started before the others, so that under xdist "
                                       "the rest of the suite runs beside it instead of after it")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("first") is None)  # stable: the rest keep their order
