"""``--pktassert-kernel=6.1,6.12,host``: the selected tests run on this machine (``host``) and then,
in turn, in a VM of each other kernel. Each VM's reports come back into this run as xdist's workers'
do (``<test>[@<kernel>]``: terminal, short summary, JUnit with a ``pktassert_kernel`` property), and
the terminal summary sets the kernels side by side: which tests differ, and each failure's own words
(the verifier's log, the assertion) from the kernel where it failed."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pktassert.build import build_cache
from pktassert.kernels import guest_side, kernel_images, vm_boot
from pktassert.reports import kernel_identity
from pktassert.reports.test_report import RUN_ENV

OPTION = "--pktassert-kernel"
LOG_ENV = "PKTASSERT_VM_LOG"  # a file for each VM's whole console output; {kernel} in it is the kernel's name
# Options of the outer run that the run in the VM must not repeat: outputs the host writes (the reports
# come back here), the split and parallelism already applied here (the VM gets the chosen node ids).
# name -> takes a value
NOT_IN_GUEST = {OPTION: True, "--junitxml": True, "--junit-xml": True, "--splits": True, "--group": True,
                "--splitting-algorithm": True, "--durations-path": True, "--store-durations": False,
                "-n": True, "--numprocesses": True, "--dist": True, "--maxprocesses": True, "--basetemp": True,
                "--lf": False, "--last-failed": False, "--ff": False, "--failed-first": False, "--sw": False,
                "--stepwise": False, "--pktassert-cache-dir": True}


def guest_args(args: Sequence[str]) -> list[str]:
    """The outer run's arguments without those in NOT_IN_GUEST (``--opt v``, ``--opt=v``, ``-n2``)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in NOT_IN_GUEST:
            skip = NOT_IN_GUEST[name] and "=" not in arg
            continue
        if arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2:  # -n2, -nauto
            continue
        out.append(arg)
    return out


def on_kernel(nodeid: str, label: str) -> str:
    """A test's id on another kernel, as one more parameter: ``t[@6.1]``, ``t[a-b@6.1]`` (inside the brackets,
    where pytest's and JUnit's readers of node ids keep it with the test's name)."""
    return f"{nodeid[:-1]}@{label}]" if nodeid.endswith("]") else f"{nodeid}[@{label}]"


def parse(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise pytest.UsageError(f"{OPTION}={value}: name each kernel once, comma-separated: e.g. 6.1,6.12,host "
                                f"(host: this machine; 6.1, 6.12: Debian 12's; or a vmlinuz path)")
    return names


@dataclasses.dataclass
class Column:
    label: str
    heading: str = ""                                  # the kernel's identity line
    notes: str = ""                                    # where it came from, how it booted
    outcomes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # nodeid -> (outcome, words)

    def take(self, report: pytest.TestReport, nodeid: str) -> None:
        was = self.outcomes.get(nodeid, ("passed", ""))
        if report.failed:
            words = _words(report)
            outcome = "failed" if report.when == "call" else "error"
            if was[0] not in ("failed", "error"):
                self.outcomes[nodeid] = (outcome, words)
        elif report.skipped and was[0] == "passed":
            self.outcomes[nodeid] = ("skipped", str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "")
        else:
            self.outcomes.setdefault(nodeid, was)


class KernelMatrix:
    def __init__(self, config: pytest.Config, names: list[str]) -> None:
        self.config = config
        self.names = names
        self.columns = {n: Column(n) for n in names}
        self.nodeids: list[str] = []
        if kernel_images.HOST in self.columns:
            self.columns[kernel_images.HOST].heading = kernel_identity.identity().line()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.nodeids = [item.nodeid for item in items]
        if kernel_images.HOST not in self.columns:
            items[:] = []  # nothing runs here; the VMs run them all

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self.nodeids = self.nodeids or list(ids)  # under xdist the workers collect; each the same ids

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if kernel_images.HOST in self.columns and not getattr(report, "pktassert_kernel", None):
            self.columns[kernel_images.HOST].take(report, report.nodeid)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        vms = [n for n in self.names if n != kernel_images.HOST]
        if not hasattr(self.config, "workerinput") and not self.config.getoption("numprocesses", default=None):
            session.testscollected = len(self.nodeids) * len(self.names)  # the progress counts every kernel's
        result = yield
        if session.shouldfail or session.shouldstop or not self.nodeids:
            return result
        for name in vms:
            self._run(session, name)
        session.testscollected = max(session.testscollected, len(self.nodeids))
        return True

    def _run(self, session: pytest.Session, name: str) -> None:
        column = self.columns[name]
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            image = kernel_images.resolve(name)
            cache = build_cache.directory()
            cache.mkdir(parents=True, exist_ok=True)
            evidence = Path(self.config.rootpath, self.config.getoption("pktassert_evidence_dir"))
            evidence.mkdir(parents=True, exist_ok=True)
            kernel_images.directory().mkdir(parents=True, exist_ok=True, mode=0o700)
            exchange = Path(tempfile.mkdtemp(prefix="vm-run-", dir=kernel_images.directory()))
        except (kernel_images.KernelUnavailable, OSError) as e:
            self._failed(name, f"kernel {name}: {e}")
            return
        try:
            (exchange / "select").write_text("\n".join(self.nodeids) + "\n")
            reports = exchange / "reports.jsonl"
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *guest_args(self.config.invocation_params.args),
                    f"{guest_side.REPORTS_OPTION}={reports}", f"{guest_side.SELECT_OPTION}={exchange / 'select'}"]
            script = (f"cd {shlex.quote(str(self.config.invocation_params.dir))} && exec env -u {RUN_ENV} "
                      f"PYTHONDONTWRITEBYTECODE=1 {build_cache.ENV}={shlex.quote(str(cache))} "
                      f"{' '.join(shlex.quote(a) for a in argv)}")
            if reporter:
                reporter.ensure_newline()
                reporter.write_line(f"pktassert: kernel {name}: {image.release} ({image.source}), booting...")
            vm = vm_boot.run(image, script, rwdirs=[exchange, cache, evidence], overlays=[])
            log = os.environ.get(LOG_ENV)
            if log:
                Path(log.replace("{kernel}", name.replace("/", "_"))).write_text(vm.output)
            column.notes = (f"{image.source}; {vm.accel.upper()} ({vm.why}); boot {vm.boot_s:.0f} s, "
                            f"run {vm.total_s - vm.boot_s:.0f} s")
            seen = self._take(name, image.release, reports)
            missing = [n for n in self.nodeids if n not in seen]
            if vm.returncode < 0 or (missing and seen):
                tail = "\n".join(vm.output.rstrip().splitlines()[-40:])
                self._failed(name, f"kernel {name} ({image.release}): the VM ran {len(seen)} of "
                                   f"{len(self.nodeids)} tests (exit {vm.returncode}). Its last output:\n{tail}")
            elif not seen:
                tail = "\n".join(vm.output.rstrip().splitlines()[-40:])
                self._failed(name, f"kernel {name} ({image.release}): no test ran in the VM (exit "
                                   f"{vm.returncode}). Its last output:\n{tail}")
        except kernel_images.KernelUnavailable as e:
            self._failed(name, f"kernel {name}: {e}")
        finally:
            shutil.rmtree(exchange, ignore_errors=True)

    def _take(self, name: str, release: str, reports: Path) -> set[str]:
        """Feed the VM's reports into this run; the node ids seen."""
        seen: set[str] = set()
        column = self.columns[name]
        label = name if "/" not in name else release
        try:
            lines = reports.read_text().splitlines()
        except OSError:
            return seen
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut by a VM killed at its deadline
            if "kernel" in data:
                column.heading = data["kernel"]
                continue
            report = self.config.hook.pytest_report_from_serializable(config=self.config, data=data["report"])
            base = report.nodeid
            seen.add(base)
            column.take(report, base)
            report.nodeid = on_kernel(base, label)
            fspath, lineno, domain = report.location
            report.location = (fspath, lineno, on_kernel(domain, label))
            report.user_properties = [*report.user_properties, ("pktassert_kernel", release)]
            report.pktassert_kernel = label
            self.config.hook.pytest_runtest_logreport(report=report)
        return seen

    def _failed(self, name: str, words: str) -> None:
        report = pytest.TestReport(nodeid=f"pktassert::kernel[{name}]", location=("pktassert", None, f"kernel {name}"),
                                   keywords={}, outcome="failed", longrepr=words, when="call")
        report.pktassert_kernel = name  # type: ignore[attr-defined]
        self.columns[name].outcomes[report.nodeid] = ("error", words.splitlines()[0])
        self.config.hook.pytest_runtest_logreport(report=report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.write_sep("=", "pktassert: results per kernel")
        for column in self.columns.values():
            tr.write_line(f"{column.label}: {column.heading or '(no run)'}" + (f" - {column.notes}" if column.notes else ""))
        rows = list(dict.fromkeys(n for c in self.columns.values() for n in c.outcomes))
        differ = [n for n in rows if len({c.outcomes.get(n, ('not run', ''))[0] for c in self.columns.values()}) > 1]
        same = len(rows) - len(differ)
        width = max([len(n) for n in differ] + [4])
        if differ:
            tr.write_line("")
            tr.write_line("test".ljust(width) + "".join(f"  {c.label:<10}" for c in self.columns.values()))
            for nodeid in differ:
                cells = [c.outcomes.get(nodeid, ("not run", ""))[0] for c in self.columns.values()]
                tr.write_line(nodeid.ljust(width) + "".join(f"  {cell:<10}" for cell in cells))
                for column in self.columns.values():
                    outcome, words = column.outcomes.get(nodeid, ("not run", ""))
                    if outcome in ("failed", "error", "skipped") and words:
                        tr.write_line(f"    {column.label}: {_first_lines(words)}", red=True)
        tr.write_line(f"{same} test(s) with the same outcome on every kernel; {len(differ)} differ.")


def _words(report: pytest.TestReport) -> str:
    """A failure's own words: pktassert's message (the verifier's log follows it), else the exception line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return str(crash.message)
    return str(report.longrepr).strip()


def _first_lines(words: str, n: int = 3) -> str:
    lines = [line.strip() for line in words.strip().splitlines() if line.strip()]
    said = " | ".join(lines[:n]) + (" ..." if len(lines) > n else "")
    return said if len(said) <= 400 else said[:400] + " ..."


def configure(config: pytest.Config) -> None:
    """Registers the matrix (outer run, controller only) or the guest side (inside a VM)."""
    if config.getoption("pktassert_vm_reports"):
        config.pluginmanager.register(guest_side.GuestSide(config), "pktassert-vm-guest")
        return
    value = config.getoption("pktassert_kernel")
    if not value or hasattr(config, "workerinput"):
        return
    names = parse(value)
    if kernel_images.HOST not in names and config.getoption("numprocesses", default=None):
        raise pytest.UsageError(f"{OPTION}={value} runs nothing on this machine, and -n only spreads this "
                                f"machine's tests: drop -n, or add host to the kernels.")
    config.pluginmanager.register(KernelMatrix(config, names), "pktassert-kernel-matrix")


def add_options(group: pytest.OptionGroup) -> None:
    group.addoption(OPTION, metavar="K1,K2,...",
                    help="run the selected tests on each kernel: host (this machine), 6.1 and 6.12 (Debian 12's, "
                         "fetched and kept in ~/.cache/pktassert/kernels), or a vmlinuz path; each other kernel "
                         "in a VM with no network (virtme-ng + qemu: KVM when it works, else TCG), its results "
                         "beside this machine's")
    guest_side.add_options(group)
