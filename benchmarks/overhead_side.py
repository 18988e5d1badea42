"""One side of benchmarks/overhead.py: the pktassert on PYTHONPATH measured, one JSON line printed.
Works on trees before and after issue 24 (phases a tree lacks read 0)."""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP

from pktassert import BccSource, LibbpfSource, ObjectFile, Session, Verdict
from pktassert.build import build_cache, libbpf_build

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KINDS = {"bcc": lambda: BccSource(EXAMPLES / "port_blocklist.c", "port_blocklist"),
         "libbpf": lambda: LibbpfSource(EXAMPLES / "port_blocklist.bpf.c", "port_blocklist"),
         "object": lambda: ObjectFile(EXAMPLES / "build" / "port_blocklist.bpf.o", "port_blocklist")}
MAIN = threading.main_thread()
# (module, attribute, phase): each call's wall time, on the test's path (the main thread) or ahead (another)
WRAPPED = [
    ("pktassert.netns.namespace", "Namespace.__init__", "namespace creation"),
    ("pktassert.case", "Case.topology", "topology as handed to the test"),
    ("pktassert.kernel.xdp_anchor", "XdpAnchor.hold", "anchor in the XDP dispatcher"),
    ("pktassert.instruments.receiver", "Receiver.attach", "attach receiver (peer)"),
    ("pktassert.instruments.receiver", "Receiver.detach", "detach receiver"),
    ("pktassert.instruments.receiver", "Receiver.clear", "clear receiver"),
    ("pktassert.programs.loaded", "Loaded.reset", "map reset"),
    ("pktassert.device.inject", "Injector.__call__", "inject (1 packet)"),
    ("pktassert.netns.topology", "Topology.stop", "stop links (down)"),
    ("pktassert.case", "Case.close", "teardown (all)"),
    ("pktassert.transports.live", "LivePath.close", "close inject socket"),
    ("pktassert.netns.topology", "Topology.close", "close namespaces"),
]
IPR_PHASES = {"link:add": "veth", "addr": "address/neighbour setup", "neigh": "address/neighbour setup",
              "link:set": "link flags, up, alias", "get_links": "lookups", "link_lookup": "lookups"}


class Phases:
    def __init__(self) -> None:
        self.sums: dict[str, float] = collections.defaultdict(float)

    def add(self, phase: str, seconds: float) -> None:
        where = "path" if threading.current_thread() is MAIN else "ahead"
        self.sums[f"{phase} [{where}]"] += seconds

    def timer(self, fn: Any, phase: str) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(phase, time.perf_counter() - t)
        return timed

    def install(self) -> None:
        import importlib  # noqa: PLC0415

        for module, attr, phase in WRAPPED:
            try:
                owner = getattr(importlib.import_module(module), attr.split(".")[0])
            except (ImportError, AttributeError):
                continue  # a phase this tree does not have
            name = attr.split(".")[1]
            if name in vars(owner):
                setattr(owner, name, self.timer(vars(owner)[name], phase))
        from pktassert.hooks.table import HOOKS  # noqa: PLC0415

        object.__setattr__(HOOKS["xdp"], "attach", self.timer(HOOKS["xdp"].attach, "attach filter (DUT)"))
        from pktassert.netns import namespace  # noqa: PLC0415

        made = namespace.Namespace.__init__
        phases = self

        def init(ns: Any, *a: Any, **k: Any) -> None:
            made(ns, *a, **k)
            ipr = ns.ipr  # the creating thread's: what builds the topology
            for method in ("link", "addr", "neigh", "get_links", "link_lookup"):
                fn = getattr(ipr, method)

                def timed(*a: Any, _fn: Any = fn, _m: str = method, **k: Any) -> Any:
                    t = time.perf_counter()
                    try:
                        return _fn(*a, **k)
                    finally:
                        key = f"{_m}:{a[0]}" if _m == "link" and a else _m
                        phases.add(IPR_PHASES.get(key, "link flags, up, alias"), time.perf_counter() - t)
                try:
                    setattr(ipr, method, timed)
                except AttributeError:
                    pass
        namespace.Namespace.__init__ = init  # type: ignore[method-assign]


def kworker_seconds() -> float:
    """CPU time the kernel's worker threads have used (where the kernel cleans up a closed network
    namespace: cleanup_net runs on a workqueue), summed over the kworkers alive now."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if "(kworker" in text:
            fields = text[text.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (ticks)
    return total / os.sysconf("SC_CLK_TCK")


def per_test(session: Session, kind: str, n: int, phases: Phases) -> dict[str, float]:
    program = KINDS[kind]()
    session.dut(xdp=program, fates=False).close()  # the filter loaded (the session keeps it), receiver made

    def one_test(tier: str) -> None:
        with session.dut(xdp=program, fates=False, tier=tier) as dut:
            assert dut.inject(IP(dst=dut.ip) / TCP(dport=23, flags="S")).verdict == Verdict.DROP

    for _ in range(3):
        one_test("live")
    phases.sums.clear()
    walls = []
    kw0 = kworker_seconds()
    for _ in range(n):
        t = time.perf_counter()
        one_test("live")
        walls.append(time.perf_counter() - t)
    out = {"per live test (s)": statistics.median(walls),
           "kernel workers' CPU per test (s)": (kworker_seconds() - kw0) / n}
    out.update({f"phase {k} (s)": v / n for k, v in sorted(phases.sums.items())})
    units = []
    for _ in range(n):
        t = time.perf_counter()
        one_test("unit")
        units.append(time.perf_counter() - t)
    out["per unit test (s)"] = statistics.median(units)
    return out


def timed(fn: Any, n: int) -> float:
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def load_close(kind: str) -> None:
    KINDS[kind]().load().close()


EDIT_TEST = """\
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict

@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.xdp("{source}", func="port_blocklist")
def test_telnet(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23, flags="S")).verdict == Verdict.DROP
"""


def edit_rerun(kind: str, work: Path, n: int) -> float:
    """Wall time of `pytest one_test` right after the filter's source changed (a new comment)."""
    src = work / ("filter.bpf.c" if kind == "libbpf" else "filter.c")
    shutil.copy(EXAMPLES / ("port_blocklist.bpf.c" if kind == "libbpf" else "port_blocklist.c"), src)
    shutil.copy(EXAMPLES / "build" / "vmlinux.h", work / "vmlinux.h")
    (work / f"test_{kind}.py").write_text(EDIT_TEST.format(source=src.name))
    # As on a user's machine: Python keeps compiled bytecode (this sandbox sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls = []
    for i in range(-1, n):
        with open(src, "a") as f:
            f.write(f"/* edit {kind} {i} {time.time()} */\n")
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"test_{kind}.py"],
                              cwd=work, capture_output=True, text=True, env=env)
        if i >= 0:
            walls.append(time.perf_counter() - t)
        assert done.returncode == 0, done.stdout[-2000:]
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=40)
    ap.add_argument("--no-edit", action="store_true")
    args = ap.parse_args()
    import bcc  # noqa: F401, PLC0415  (imported before timing: paid once per process)

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[build_cache.ENV] = str(Path(tmp) / "cache")

        def cold() -> None:
            for sub in ("objects", "linked"):  # the build cache keeps a folder per key
                folder = build_cache.root() / sub
                for entry in folder.iterdir() if folder.exists() else ():
                    shutil.rmtree(entry)
            load_close("libbpf")

        libbpf_build.vmlinux_dir()
        out["bcc compile+load (s)"] = timed(lambda: load_close("bcc"), 2)
        out["libbpf cold compile+link+load (s)"] = timed(cold, 3)
        out["libbpf cached load (s)"] = timed(lambda: load_close("libbpf"), 5)
        out["object cached load (s)"] = timed(lambda: load_close("object"), 5)
        phases = Phases()
        phases.install()
        with Session() as session:
            for kind in KINDS:
                out[kind] = per_test(session, kind, args.tests, phases)
        if not args.no_edit:
            work = Path(tmp) / "edit"
            work.mkdir()
            out["bcc edit -> rerun one test (s)"] = edit_rerun("bcc", work, 2)
            out["libbpf edit -> rerun one test (s)"] = edit_rerun("libbpf", work, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
