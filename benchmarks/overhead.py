"""What a filter costs before its first packet, per kind of filter, side by side in one run:
bcc compile+load, libbpf cold compile+link+load, cached load, an object's load, per-test overhead
(live: topology + attach + inject + teardown; unit: map reset + inject), the wall time of editing a
filter and rerunning one test, and how many compiles a suite under -n 2 makes.

Run as root: .venv/bin/python benchmarks/overhead.py [--json] [--tests N]. Medians over repeated runs;
compare the kinds with each other, not with other machines. Goals (issue 10): cold libbpf compile
<= 0.5 s, cached load <= 50 ms, edit -> rerun one test <= 1.5 s wall, one compile per filter under -n 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import show  # benchmarks/report.py (scripts run from this folder)
from scapy.layers.inet import IP, TCP

from pktassert import BccSource, LibbpfSource, ObjectFile, Session, Verdict
from pktassert.build import build_cache, libbpf_build

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KINDS = {"bcc": lambda: BccSource(EXAMPLES / "port_blocklist.c", "port_blocklist"),
         "libbpf": lambda: LibbpfSource(EXAMPLES / "port_blocklist.bpf.c", "port_blocklist"),
         "object": lambda: ObjectFile(EXAMPLES / "build" / "port_blocklist.bpf.o", "port_blocklist")}


def timed(fn, n: int) -> float:
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def load_close(kind: str) -> None:
    KINDS[kind]().load().close()


def per_test(session: Session, kind: str, n: int) -> tuple[float, float]:
    """One test's cost once its filter is loaded: live, a dut's namespaces + attach + inject + teardown;
    unit, the map reset + inject; each a Session dut of the filter alone (fates=False), as the xdp fixture is."""
    program = KINDS[kind]()
    session.dut(xdp=program, fates=False).close()  # before timing: the filter loaded (the session keeps it), its receiver made

    def one_test(tier: str) -> None:
        with session.dut(xdp=program, fates=False, tier=tier) as dut:
            assert dut.inject(IP(dst=dut.ip) / TCP(dport=23, flags="S")).verdict == Verdict.DROP

    return timed(lambda: one_test("live"), n), timed(lambda: one_test("unit"), n)


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
    # As on a user's machine: Python keeps compiled bytecode (this sandbox sets PYTHONDONTWRITEBYTECODE,
    # which makes every run recompile pytest, scapy and pktassert); one run first to fill that cache.
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


def suite_compiles(cache: Path) -> int:
    """Compiles made by the example suite's port blocklist tests under -n 2, on an empty cache."""
    shutil.rmtree(cache, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
                           "--pktassert-tier=both", "-k", "not full_port", str(EXAMPLES / "test_port_blocklist.py"),
                           str(EXAMPLES / "test_port_blocklist_object.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    return sum(1 for c in build_cache.compiles(cache) if c["what"].startswith("compile"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tests", type=int, default=20)
    args = ap.parse_args()
    import bcc  # noqa: F401  (imported before timing: the import is paid once per process)

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        os.environ[build_cache.ENV] = str(cache)
        libbpf_build.vmlinux_dir.cache_clear()
        t = time.perf_counter()
        libbpf_build.vmlinux_dir()  # once per kernel per machine
        vmlinux_s = time.perf_counter() - t

        def cold() -> None:
            for sub in ("objects", "linked"):  # the build cache keeps a folder per key: <kind>/<key>/out.o
                folder = build_cache.root() / sub
                for entry in folder.iterdir() if folder.exists() else ():  # none yet: the first cold build
                    shutil.rmtree(entry)
            load_close("libbpf")

        out: dict[str, object] = {
            "vmlinux_h_once_s": round(vmlinux_s, 3),
            "bcc_compile_load_s": round(timed(lambda: load_close("bcc"), 3), 3),
            "libbpf_cold_compile_link_load_s": round(timed(cold, 5), 3),
            "libbpf_cached_load_s": round(timed(lambda: load_close("libbpf"), 10), 4),
            "object_cached_load_s": round(timed(lambda: load_close("object"), 10), 4),
        }
        with Session() as session:
            for kind in KINDS:
                live, unit = per_test(session, kind, args.tests)
                out[f"{kind}_per_test_live_s"], out[f"{kind}_per_test_unit_s"] = round(live, 4), round(unit, 5)
        work = Path(tmp) / "edit"
        work.mkdir()
        out["bcc_edit_rerun_one_test_wall_s"] = round(edit_rerun("bcc", work, 3), 2)
        out["libbpf_edit_rerun_one_test_wall_s"] = round(edit_rerun("libbpf", work, 3), 2)
        out["suite_n2_compiles_of_1_libbpf_filter"] = suite_compiles(cache)
        out["bcc_over_libbpf_cached_load"] = round(out["bcc_compile_load_s"] / out["libbpf_cached_load_s"], 1)  # type: ignore[operator]
    show(out, args.json)


if __name__ == "__main__":
    main()
