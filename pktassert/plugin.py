"""The pytest plugin: options, markers, fixtures and failure messages. The fixtures are a thin face
over pktassert.Session (pktassert/session.py, pktassert/case.py), which composes the engine: one
Session per pytest process, one Case of it per test."""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pktassert import host_hooks, plugin_hypothesis
from pktassert.build import build_cache
from pktassert.case import PASS_THROUGH, TIERS, Case
from pktassert.compare import report as compare_evidence
from pktassert.device.dut import XdpUnderTest
from pktassert.device.inject import Injector
from pktassert.device.program_cache import ProgramCache
from pktassert.errors import ProgramError
from pktassert.hooks.table import HOOKS
from pktassert.instruments.fate_tracker import FateTracker
from pktassert.instruments.receiver import Receiver
from pktassert.instruments.sender import Sender
from pktassert.instruments.tag_mover import TagMover
from pktassert.kernels import matrix as kernel_matrix
from pktassert.machine import faults, host, preflight, reaper
from pktassert.netns import Topology, leftovers
from pktassert.observers.printk import TracePipe
from pktassert.programs.bcc_program import looks_like_path
from pktassert.programs.nft_ruleset import RuleSet
from pktassert.programs.subjects import SUBJECTS, Subject, subject_of
from pktassert.reports import kernel_identity
from pktassert.reports import test_report as reports
from pktassert.results import assertion
from pktassert.session import OnFirstUse, Session


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pktassert", "pktassert: packet filter tests")
    group.addoption("--pktassert-require", action="store_true",
                    help="fail instead of skip when the host lacks something pktassert needs (root, bcc, kernel "
                         "headers, the kernel's BTF, clang, a kernel feature, ...): for CI")
    group.addoption("--pktassert-summary", action="store_true",
                    help="print the verdicts each filter gave, after the run")
    group.addoption("--pktassert-tier", choices=TIERS + ("both",), default="live",
                    help="where inject() runs packets: live (over a veth, the default), unit "
                         "(BPF_PROG_TEST_RUN, no traffic), or both (every test once per tier). "
                         "A test that parametrizes 'tier' itself keeps its own choice.")
    group.addoption("--pktassert-evidence", choices=("failed", "all", "none"), default="failed",
                    help="write a pcapng of the packets a test injected (verdicts in the EPB verdict option, "
                         "a comment per packet): for failed tests (default), all tests, or none")
    group.addoption("--pktassert-evidence-dir", metavar="DIR", default="pktassert-evidence",
                    help="where the pcapng files go (relative to the rootdir), in a folder named once per run "
                         "(default: pktassert-evidence/)")
    group.addoption("--pktassert-cache-dir", metavar="DIR",
                    help=f"where compiled and linked libbpf filters are kept, shared by runs and xdist workers "
                         f"(default: ${build_cache.ENV}, else ~/.cache/pktassert/build); clear it with "
                         f"`pktassert-cleanup --cache`")
    kernel_matrix.add_options(group)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdp(source, func, cflags=(), globals=None): the XDP filter under test: "
                                       "a bcc or libbpf C source (a .c path, relative to the test file or "
                                       "rootdir, or the text) or a BPF ELF object (.o), and its entry function "
                                       "(or section); globals= sets an object's global variables before load")
    config.addinivalue_line("markers", "tc(source, func, cflags=(), globals=None, direction=\"ingress\"): the tc "
                                       "classifier under test (sched_cls, direct action), attached through clsact "
                                       "at ingress or egress of the DUT's veth; kinds as for xdp")
    config.addinivalue_line("markers", "nftables(source): an nftables rule set under test (a .nft path, relative to "
                                       "the test file or rootdir, or the text), loaded into the DUT namespace "
                                       "(live tier; use the dut fixture for each packet's fate)")
    # One folder per run, named in the controller; xdist workers inherit the environment.
    os.environ.setdefault(reports.RUN_ENV, reports.run_folder(config))
    chosen = config.getoption("pktassert_cache_dir")
    if chosen:  # through the environment, so xdist workers and child processes share it
        os.environ[build_cache.ENV] = os.path.abspath(chosen)
    if config.getoption("pktassert_summary"):
        config.pluginmanager.register(reports.VerdictSummary(), "pktassert-summary")
    config.pluginmanager.register(host_hooks.HostHooks(config), "pktassert-host")
    config.pluginmanager.register(kernel_identity.KernelReport(), "pktassert-kernel")
    kernel_matrix.configure(config)
    reaper.orderly_sigterm(config)  # SIGTERM tears down as Ctrl-C does; the fault matrix's failpoints (tests)
    faults.install()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Free what a crashed earlier run left alive (only namespaces whose owner is dead), once per
    # run: in the controller, not in each xdist worker.
    if hasattr(session.config, "workerinput") or preflight.missing_caps():
        return
    try:
        freed, stuck = leftovers.clean()
    except OSError as e:  # e.g. a sandbox that hides other processes' namespaces: not our run's problem
        freed, stuck = [], []
        session.config.issue_config_time_warning(pytest.PytestWarning(f"pktassert: leftover scan failed: {e}"), 2)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for lo in freed + stuck:
        verb = "freed" if lo in freed else "could not free"
        line = f"pktassert: {verb} a namespace left by a crashed run: {lo.describe()}"
        if reporter:
            reporter.write_line(line, yellow=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    plugin_hypothesis.allow_our_fixtures(items)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.config.getoption("pktassert_tier") != "both" or "tier" not in metafunc.fixturenames:
        return
    if _parametrizes_tier(metafunc):
        return
    # A rule set, and the DUT's whole stack, have no unit tier: the kernel's test run has no stack
    # behind the filter.
    live_only = metafunc.definition.get_closest_marker("nftables") is not None or "dut" in metafunc.fixturenames
    metafunc.parametrize("tier", ("live",) if live_only else TIERS, indirect=True)


def _parametrizes_tier(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "tier" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


@pytest.fixture
def tier(request: pytest.FixtureRequest) -> str:
    """"live" or "unit": parametrize it (indirect=True) per test, or choose with --pktassert-tier."""
    value = getattr(request, "param", None) or request.config.getoption("pktassert_tier")
    if value not in TIERS:
        raise pytest.UsageError(f"tier {value!r}: choose one of {', '.join(TIERS)}.")
    return value


def _resolve(source: str, item: pytest.Item, marker: str = "xdp", text: str = "the C source text") -> str | Path:
    """A marker's source: the text itself, or a file relative to the test's folder or the rootdir."""
    if not looks_like_path(source):
        return source
    candidates = [Path(source)] if os.path.isabs(source) else [item.path.parent / source, item.config.rootpath / source]
    for c in candidates:
        if c.exists():
            return c
    if source.endswith(".o"):  # an object the user's build makes: keep the path, loading says how to build it
        return candidates[0]
    raise ProgramError(f"@pytest.mark.{marker}: no file {source!r} (looked at {', '.join(map(str, candidates))}). "
                       f"Fix: a path relative to the test file or the rootdir, or {text} itself.")


@pytest.fixture(scope="session")
def pktassert_ready(pytestconfig: pytest.Config) -> None:
    """Skips (or, with --pktassert-require, errors) when this machine can't run live tests."""
    found = preflight.problems()
    if found:
        msg = "pktassert cannot run here: " + " | ".join(found)
        if pytestconfig.getoption("pktassert_require"):
            pytest.fail(msg + " (--pktassert-require is set)", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def pktassert_session(pktassert_ready: None) -> Iterator[Session]:
    """The engine for this pytest process (pktassert/session.py): what every test shares, made on first
    use; each test's pieces come from a Case of it (the pktassert_case fixture)."""
    with Session() as session:
        yield session


@pytest.fixture
def pktassert_case(pktassert_session: Session, request: pytest.FixtureRequest) -> Iterator[Case]:
    """This test's pieces (namespaces, filters, rule set, injector), made as the fixtures ask, freed after it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    case = pktassert_session.case(f"{worker} {request.node.name}")
    yield case
    case.close()


@pytest.fixture(scope="session")
def pktassert_programs(pktassert_session: Session) -> ProgramCache:
    """The session's loaded filters."""
    return pktassert_session.programs


def _subject(request: pytest.FixtureRequest, hook: str) -> Subject | None:
    """The filter a @pytest.mark.<hook> marker names, or None without one."""
    mark = request.node.get_closest_marker(hook)
    if mark is None:
        return None
    args, kwargs = list(mark.args), dict(mark.kwargs)
    source = kwargs.pop("source") if "source" in kwargs else (args.pop(0) if args else None)
    if isinstance(source, SUBJECTS):
        return source
    func = kwargs.pop("func") if "func" in kwargs else (args.pop(0) if args else None)
    cflags = kwargs.pop("cflags", ())
    global_values = kwargs.pop("globals", None)
    sizes = kwargs.pop("max_entries", None)
    kwargs.pop("direction", None)  # the tc fixture's (where it attaches), not the filter's
    if source is None or func is None or args or kwargs:
        extra = [repr(a) for a in args] + list(kwargs)
        raise ProgramError(f"@pytest.mark.{hook} takes the source or object, the entry function, cflags and globals"
                           f"{' and direction' if hook == 'tc' else ''}: "
                           f"@pytest.mark.{hook}(\"filter.c\", func=\"entry\", cflags=(\"-DX=1\",))"
                           + (f"; it also got {', '.join(extra)}" if extra else "") + ".")
    if not isinstance(source, (str, os.PathLike)):
        raise ProgramError(f"@pytest.mark.{hook}: the source {source!r} is a {type(source).__name__}. Fix: a path to "
                           f"the filter's C file or object, or its C text.")
    # func and cflags go to the subject as given: it checks them, and says what is wrong.
    return subject_of(_resolve(str(source), request.node), func, cflags, global_values, hook, sizes)


@pytest.fixture
def xdp_program(request: pytest.FixtureRequest) -> Subject | None:
    """The XDP filter under test; from @pytest.mark.xdp (None without one), or override this fixture
    in a module, class or conftest to return pktassert.BccSource, LibbpfSource or ObjectFile."""
    return _subject(request, "xdp")


@pytest.fixture
def tc_program(request: pytest.FixtureRequest) -> Subject | None:
    """The tc classifier under test; from @pytest.mark.tc (None without one), or override this fixture (hook="tc")."""
    return _subject(request, "tc")


NONE_CHOSEN = {
    "xdp": "no filter chosen for this test. Fix: mark it @pytest.mark.xdp(\"filter.c\", func=\"entry\") or override "
           "the xdp_program fixture to return pktassert.Program(...).",
    "tc": "no tc filter chosen for this test. Fix: mark it @pytest.mark.tc(\"filter.c\", func=\"entry\", "
          "direction=\"ingress\") or override the tc_program fixture.",
}


def _chosen(request: pytest.FixtureRequest, program: Subject | None, hook: str) -> Subject:
    """The filter the test chose for ``hook`` (its ``<hook>_program`` fixture, overridden or not); a
    marker that names another filter than an override gives is an error naming both."""
    if program is None:
        raise ProgramError(NONE_CHOSEN[hook])
    marked = _subject(request, hook)
    if marked is not None and marked.cache_key() != program.cache_key():
        raise ProgramError(f"@pytest.mark.{hook} chooses {marked.func} ({marked.name}), but the {hook}_program fixture "
                           f"gives {program.func} ({program.name}). Fix: one of them: drop the marker, or have the "
                           f"fixture return the marker's filter.")
    return program


@pytest.fixture
def topology(pktassert_case: Case) -> Topology:
    """A DUT and a peer namespace joined by a veth pair, for this test only."""
    return pktassert_case.topology()


@pytest.fixture(scope="session")
def pktassert_receiver(pktassert_session: Session) -> OnFirstUse[Receiver]:
    """pktassert's receiver (bpf/receiver.c), compiled on first use in the session."""
    return pktassert_session.receiver


@pytest.fixture(scope="session")
def pktassert_tag_mover(pktassert_session: Session) -> OnFirstUse[TagMover]:
    """The XDP stage a tc ingress filter alone gets in the live tier (bpf/tag_mover.c), on first use."""
    return pktassert_session.tag_mover


@pytest.fixture(scope="session")
def pktassert_sender(pktassert_session: Session) -> OnFirstUse[Sender]:
    """The traffic engine, compiled on first use in the session."""
    return pktassert_session.sender


@pytest.fixture(scope="session")
def pktassert_trace_pipe(pktassert_session: Session) -> OnFirstUse[TracePipe]:
    """This process's tracefs instance for the bpf_printk lines of filters that print, on first use."""
    return pktassert_session.trace_pipe


@pytest.fixture(scope="session")
def pktassert_fate_tracker(pktassert_session: Session) -> OnFirstUse[FateTracker]:
    """pktassert's fate tracker (bpf/fates.bpf.c) on the kernel's tracepoints, on first use."""
    return pktassert_session.fate_tracker


@pytest.fixture
def xdp(tier: str, xdp_program: Subject | None, pktassert_case: Case,
        request: pytest.FixtureRequest) -> Iterator[XdpUnderTest]:
    """The filter under test with fresh state: in the live tier attached behind the inspector on
    the DUT's veth; in the unit tier loaded only, for the kernel's test runs."""
    program = _chosen(request, xdp_program, "xdp")
    yield from _noted(program, pktassert_case.filter(program, tier), request)


@pytest.fixture
def tc(tier: str, tc_program: Subject | None, xdp_program: Subject | None, pktassert_case: Case,
       request: pytest.FixtureRequest) -> Iterator[XdpUnderTest]:
    """The tc classifier under test with fresh state: in the live tier attached behind the inspector
    to the DUT's veth through clsact (direct action; ``direction=`` of the marker, ingress by default);
    in the unit tier loaded only, for the kernel's test runs."""
    tc_program = _chosen(request, tc_program, "tc")
    if getattr(tc_program, "hook", "xdp") != "tc":
        raise ProgramError(f"the tc_program fixture gave {tc_program!r}, whose hook is not tc. Fix: hook=\"tc\".")
    mark = request.node.get_closest_marker("tc")
    marked = mark.kwargs.get("direction") if mark is not None else None
    if marked is not None and marked not in HOOKS["tc"].directions:
        raise ProgramError(f"@pytest.mark.tc(direction={marked!r}): tc filters attach at "
                           f"{' or '.join(map(repr, HOOKS['tc'].directions))}.")
    if marked is not None and tc_program.direction is not None and marked != tc_program.direction:
        raise ProgramError(f"@pytest.mark.tc(direction={marked!r}), but the tc_program fixture gives "
                           f"direction={tc_program.direction!r}. Fix: one of them.")
    direction = marked or tc_program.direction or "ingress"
    # The test's XDP filter, if it has one, is the xdp fixture's: the same object a test asking for both gets.
    front = (lambda: request.getfixturevalue("xdp")) if xdp_program is not None else None
    yield from _noted(tc_program, pktassert_case.tc(tc_program, tier, direction, front), request)


def _noted(program: Subject, dut: XdpUnderTest, request: pytest.FixtureRequest) -> Iterator[XdpUnderTest]:
    """``dut`` for the test; after it, its verdict counts in the report (JUnit, --pktassert-summary)."""
    yield dut
    counts = {v.name: n for v, n in dut.counts().items() if n}
    where = program.name
    if program.is_file:
        where = os.path.relpath(where, request.config.rootpath)
    request.node.user_properties.append(("pktassert", json.dumps({"filter": f"{program.func} ({where})",
                                                                  "hook": dut.hook.name, "counts": counts})))


def _wants(request: pytest.FixtureRequest, name: str) -> bool:
    return request.node.get_closest_marker(name) is not None or name in request.fixturenames


@pytest.fixture
def nftables(tier: str, request: pytest.FixtureRequest) -> RuleSet:
    """The test's nftables rule set (@pytest.mark.nftables), loaded fresh into the DUT namespace."""
    mark = request.node.get_closest_marker("nftables")
    if mark is None or not mark.args:
        raise ProgramError("the nftables fixture needs @pytest.mark.nftables(\"rules.nft\") (a file or the rule set text).")
    if tier == "unit":
        raise ProgramError("@pytest.mark.nftables: a rule set needs the live tier (the unit tier runs a BPF filter "
                           "alone, with no stack). Fix: @pytest.mark.parametrize(\"tier\", [\"live\"], indirect=True).")
    source = mark.args[0]
    # bytes are rule-set text as they are (RuleSet checks them); str() would make "b'...'" of them
    where = source if isinstance(source, bytes) else _resolve(str(source), request.node, "nftables", "the rule set text")
    case: Case = request.getfixturevalue("pktassert_case")  # after the checks: a bad marker is said first
    return case.rule_set(where)


@pytest.fixture
def pktassert_pass_through(tier: str, pktassert_case: Case, request: pytest.FixtureRequest) -> Iterator[XdpUnderTest]:
    """pktassert's pass-through XDP filter (bpf/pass_through.bpf.c): the DUT of a test without a filter of its own."""
    yield from _noted(PASS_THROUGH, pktassert_case.filter(PASS_THROUGH, tier), request)


@pytest.fixture
def dut(tier: str, request: pytest.FixtureRequest, pktassert_case: Case,
        xdp_program: Subject | None, tc_program: Subject | None) -> XdpUnderTest:
    """The device under test as a whole: its XDP or tc filter (the test's markers; without one,
    pktassert's pass-through), its rule set (@pytest.mark.nftables) and its stack; in the live tier
    each injected packet's fate (pktassert.Fate) is tracked and ``dut.listen()`` opens real sockets."""
    def under() -> XdpUnderTest:
        # The filter the xdp and tc fixtures would test, however it was chosen (marker, override, parametrized).
        if tc_program is not None or "tc" in request.fixturenames:
            return request.getfixturevalue("tc")
        if xdp_program is not None or "xdp" in request.fixturenames:
            return request.getfixturevalue("xdp")
        return request.getfixturevalue("pktassert_pass_through")

    rules = (lambda: request.getfixturevalue("nftables")) if _wants(request, "nftables") else None
    return pktassert_case.whole(tier, under, rules)


@pytest.fixture
def inject(request: pytest.FixtureRequest, pktassert_case: Case, tc_program: Subject | None) -> Injector:
    """Run scapy packets through the filter (live: sent from the peer over the veth; unit: by
    BPF_PROG_TEST_RUN); returns a Capture of their verdicts. The filter is the test's tc filter
    when it has @pytest.mark.tc (or asks for the tc fixture), else its XDP filter; with the dut
    fixture, whatever the DUT runs, and each packet's fate too."""
    if "dut" in request.fixturenames or _wants(request, "nftables"):
        under = request.getfixturevalue("dut")
    else:
        under = request.getfixturevalue("tc" if tc_program is not None or "tc" in request.fixturenames else "xdp")
    return pktassert_case.injector(under)


def pytest_assertrepr_compare(op: str, left: Any, right: Any) -> list[str] | None:
    return assertion.explain(op, left, right)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(host.HostLacks):
        host_hooks.as_skip(item, report, call.excinfo.value)  # type: ignore[arg-type]
        return report
    # A filter that does not compile or load is the test's subject failing, not a broken fixture.
    if call.when == "setup" and call.excinfo is not None and call.excinfo.errisinstance(ProgramError):
        report.longrepr = f"pktassert: {call.excinfo.value}"
        report.when = "call"
    if call.when == "setup":
        compare_evidence.clear()
    if call.when == "call":
        reports.evidence_for(item, report)
        compare_evidence.evidence_for(item, report)
    return report

