"""--pktassert-kernel: the same tests on several kernels in one run, side by side.

The live part boots Debian 12's 6.1 and 6.12 in VMs (virtme-ng + qemu, TCG here: this machine's KVM
cannot boot a stock kernel) and runs a slice in each: a filter 6.1's verifier rejects and newer ones
accept (kernel_matrix/row_lookup.bpf.c), and the examples' XDP, tc and nftables tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pktassert.kernels import kernel_images, matrix, vm_boot

ROOT = Path(__file__).resolve().parent.parent
BAR = "tests/kernel_matrix/suite_row_lookup.py"
# The CI slice: one test of each hook and kind of filter from the examples.
SLICE = ("examples/test_port_blocklist.py::test_blocked_ports_dropped_others_pass",
         "examples/test_egress_guard.py::test_outbound_connections_to_a_blocked_port_dropped",
         "examples/test_edge_firewall.py::test_ssh_only_from_admin_net")


def test_the_guest_run_repeats_the_selection_not_the_outputs():
    args = ["-n", "2", "--pktassert-kernel=6.1,host", "-q", "--junitxml", "out.xml", "--splits=2", "--group", "1",
            "-n2", "--store-durations", "--pktassert-kernel", "6.12", "tests/x.py", "-k", "drop", "--lf"]
    assert matrix.guest_args(args) == ["-q", "tests/x.py", "-k", "drop"]


def test_a_test_on_another_kernel_is_one_more_parameter():
    assert matrix.on_kernel("t.py::test_a", "6.1") == "t.py::test_a[@6.1]"
    assert matrix.on_kernel("t.py::test_a[object-22]", "6.12") == "t.py::test_a[object-22@6.12]"
    from _pytest.junitxml import mangle_test_address  # noqa: PLC0415 - what JUnit files will say

    assert mangle_test_address("t.py::test_a[object@6.12]") == ["t", "test_a[object@6.12]"]


@pytest.mark.parametrize("value", ["", ",", "6.1,6.1", " , host"])
def test_a_kernel_list_names_each_once(value):
    if value.strip(" ,") == "host":
        assert matrix.parse(value) == ["host"]
        return
    with pytest.raises(pytest.UsageError, match="name each kernel once"):
        matrix.parse(value)


def test_a_kernel_that_cannot_be_found_says_what_to_name(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_images.KERNEL_DIR_ENV, str(tmp_path))
    with pytest.raises(kernel_images.KernelUnavailable, match="no such file"):
        kernel_images.resolve(str(tmp_path / "vmlinuz-none"))
    if shutil.which("apt-cache"):
        with pytest.raises(kernel_images.KernelUnavailable, match="no Debian kernel package matches '5.99'"):
            kernel_images.resolve("5.99")


def test_acceleration_is_chosen_and_said(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_images.KERNEL_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(vm_boot.ACCEL_ENV, "tcg")
    assert vm_boot.choose_accel() == ("tcg", f"${vm_boot.ACCEL_ENV}=tcg")
    monkeypatch.delenv(vm_boot.ACCEL_ENV)
    (tmp_path / "kvm-refused").write_text(f"{vm_boot._boot_id()}\nqemu: failed to set MSR 0x10a\n")
    accel, why = vm_boot.choose_accel()
    assert accel == "tcg" and ("failed to set MSR" in why or why == "no usable /dev/kvm")


def test_the_vm_has_no_network_and_writes_only_what_it_is_given(tmp_path):
    image = kernel_images.KernelImage("6.1", "6.1.0-0-amd64", tmp_path / "vmlinuz-6.1.0-0-amd64", "test")
    try:
        argv = vm_boot._argv(image, "tcg", "true", rwdirs=[tmp_path / "out"], overlays=[], cpus=2)
    except kernel_images.KernelUnavailable as e:
        pytest.skip(str(e))
    assert not any(a in ("--network", "-n", "--rw") or a.startswith("--network=") for a in argv)
    assert [a for a in argv if a.startswith(("--rwdir", "--overlay-rwdir"))] == [f"--rwdir={tmp_path / 'out'}"]
    assert "--disable-kvm" in argv and argv[argv.index("--") + 1].startswith(f"echo {vm_boot.STARTED!r}")


def _vm_ready() -> str | None:
    try:
        vm_boot.vng()
    except kernel_images.KernelUnavailable as e:
        return str(e)
    return None


def _side_by_side(tmp_path: Path) -> tuple[subprocess.CompletedProcess, ET.Element]:
    """One run of the bar test and the slice on 6.1, 6.12 and this machine: (the run, its JUnit root)."""
    junit = tmp_path / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:randomly",
            "--pktassert-kernel=6.1,6.12,host", f"--junitxml={junit}", BAR, *SLICE]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    assert junit.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, ET.parse(junit).getroot()


def _row(output: str, test: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(test))


@pytest.mark.first
def test_one_run_on_three_kernels(tmp_path):
    """The bar: a filter 6.1's verifier rejects and newer ones accept, both answers side by side; and the
    CI slice (one XDP, tc and nftables test each) passing on every kernel. One test: the VMs boot once."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the tests inside the VMs make namespaces and load programs")
    missing = _vm_ready()
    if missing:
        pytest.skip(missing)
    done, root = _side_by_side(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out[-3000:]  # 6.1's rejection is a failure of the run
    assert _row(out, f"{BAR}::test_long_frames_pass")[1:] == ["failed", "passed", "passed"], out
    said = out[out.index(f"{BAR}::test_long_frames_pass"):]
    assert "6.1: pktassert: the verifier rejected row_lookup()" in said and "unbounded memory access" in said, said
    assert "TCG (" in out or "KVM (" in out  # which acceleration, and why

    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    for test in SLICE:
        for suffix in ("", "@6.1]", "@6.12]"):
            base = test.split("::")[1]
            matching = [c for (_, name), c in cases.items() if name.startswith(base)
                        and (name.endswith(suffix) if suffix else "@" not in name)]
            assert matching, (test, suffix, sorted(cases))
            for case in matching:  # no failure, no skip: only properties inside
                assert [e.tag for e in case] in ([], ["properties"]), ET.tostring(case, encoding="unicode")[:3000]
    kernels = {p.get("value") for c in root.iter("testcase") for p in c.iter("property")
               if p.get("name") == "pktassert_kernel"}
    assert any(k.startswith("6.1.") for k in kernels) and any(k.startswith("6.12.") for k in kernels), kernels
    run_props = {p.get("name"): p.get("value") for p in root.findall("./testsuite/properties/property")}
    assert json.loads(run_props["pktassert_kernel"])["release"] == os.uname().release
