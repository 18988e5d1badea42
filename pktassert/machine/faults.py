"""Failpoints for the fault matrix (tests/test_kills.py): kill a real run at a chosen phase.

``PKTASSERT_KILL_AT=<phase>:<signal>:<pytest|worker>`` wraps the function that each phase runs
through (PHASES: ``module:attribute``, looked up through its module or class at every call, so a
``setattr`` here reaches every caller), and the first call of it sends the signal: to this process,
or, for ``pytest`` in an xdist worker, to the main pytest process (the worker's parent); also when
the call is in a child forked from here (pktassert/build/object_check.py). ``worker`` fires only in an xdist
worker. ``PKTASSERT_KILL_FIRED=<file>`` makes it fire once per run (the first process to create the
file; xdist's replacement for a killed worker does not fire again) and says what fired, so a test
knows the phase was reached. Without ``PKTASSERT_KILL_AT`` nothing is wrapped."""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
from collections.abc import Callable
from typing import Any

ENV, FIRED_ENV = "PKTASSERT_KILL_AT", "PKTASSERT_KILL_FIRED"
TARGETS = ("pytest", "worker")

# What a run is doing when each one is first called.
PHASES: dict[str, tuple[str, ...]] = {
    "compile": ("pktassert.build.build_cache:_dependencies",),  # clang's object made, in a temporary build folder
    "cache write": ("pktassert.build.cache_dir:place",),         # a finished product being moved into the cache
    "link": ("pktassert.build.libbpf_build:_static_link",),        # libbpf's linker, its inputs in temporary files
    "load": ("pktassert.programs.bcc_program:LoadedProgram.__init__",     # bcc: compiles and loads
             "pktassert.programs.libbpf_program:LibbpfLoaded.__init__"),
    "attach": ("pktassert.instruments.xdp_attachments:XdpAttachments.attach",),  # the filter is on the DUT, ours going on
    "nft load": ("pktassert.programs.nft_ruleset:RuleSet.__init__",),
    "trace": ("pktassert.observers.nft_trace:Tracer.switch",),             # nftables tracing turned on in the DUT
    "fates": ("pktassert.instruments.fate_tracker:FateTracker.watch",),  # the tracker on the kernel's tracepoints
    "printk": ("pktassert.observers.printk:TracePipe.take",),              # the tracefs instance open, printk on
    "flood": ("pktassert.instruments.sender:Sender.send",),              # the traffic engine sending
    "evidence write": ("pktassert.reports.evidence:_Writer.packet",),    # a pcapng half written
    "teardown": ("pktassert.device.dut:XdpUnderTest.close",),
}
_fired = False
_victim = 0  # whom the signal goes to, decided where the failpoints were installed


def parse(spec: str) -> tuple[str, signal.Signals, str]:
    phase, _, rest = spec.partition(":")
    name, _, target = rest.partition(":")
    if phase not in PHASES or target not in TARGETS:
        raise ValueError(f"{ENV}={spec!r}: <phase>:<signal>:<pytest|worker>, phases: {', '.join(PHASES)}")
    return phase, signal.Signals[name if name.startswith("SIG") else "SIG" + name], target


def resolve(where: str) -> tuple[Any, str]:
    """The object that holds the attribute, and its name (``module:Class.method`` or ``module:function``)."""
    module, _, attr = where.partition(":")
    holder: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        holder = getattr(holder, part)
    getattr(holder, name)  # AttributeError names a failpoint that no longer exists
    return holder, name


def install() -> None:
    global _victim
    spec = os.environ.get(ENV)
    if not spec:
        return
    phase, signum, target = parse(spec)
    worker = "PYTEST_XDIST_WORKER" in os.environ
    if target == "worker" and not worker:
        return  # the main process of an xdist run: the phases run in its workers
    # A phase may run in a child forked from here (pktassert/build/object_check.py tries an object's libbpf steps
    # in one): the signal still goes to this process, or to the main pytest above this worker.
    _victim = os.getppid() if target == "pytest" and worker else os.getpid()
    for where in PHASES[phase]:
        holder, name = resolve(where)
        setattr(holder, name, _wrap(getattr(holder, name), phase, signum))


def _wrap(original: Callable[..., Any], phase: str, signum: signal.Signals) -> Callable[..., Any]:
    @functools.wraps(original)
    def failpoint(*args: Any, **kwargs: Any) -> Any:
        _fire(phase, signum)
        return original(*args, **kwargs)
    return failpoint


def _fire(phase: str, signum: signal.Signals) -> None:
    global _fired
    if _fired:
        return
    _fired = True
    note = os.environ.get(FIRED_ENV)
    if note:
        try:
            fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return  # fired already in this run (a worker xdist started in place of a killed one)
        os.write(fd, json.dumps({"phase": phase, "signal": signum.name, "by": os.getpid(), "victim": _victim}).encode())
        os.close(fd)
    if _victim == os.getpid():
        # Delivered to this very thread before raise_signal returns, and a Python handler (SIGINT,
        # SIGTERM) runs right then: the interrupt is raised here, at the phase, not in a C callback later.
        signal.raise_signal(signum)
    else:
        os.kill(_victim, signum)
