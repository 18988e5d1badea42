"""One command in a VM of a given kernel: virtme-ng boots it (the host's file system read-only, the
folders we name writable, no network), runs the command as root and gives back its exit code.

KVM when it works, else TCG, and which one and why is said: /dev/kvm may exist and still not boot a
stock kernel (a nested hypervisor refuses an MSR, qemu aborts within seconds). A KVM attempt that
fails before our command starts is retried under TCG, and remembered for this machine's boot."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pktassert.kernels.kernel_images import KernelImage, KernelUnavailable, directory

ACCEL_ENV = "PKTASSERT_VM_ACCEL"       # kvm | tcg: no probing
TIMEOUT_ENV = "PKTASSERT_VM_TIMEOUT"   # seconds for one kernel's whole run
CPUS_ENV = "PKTASSERT_VM_CPUS"
STARTED = "pktassert-vm: started"      # printed by the guest before the command: the boot worked
MEMORY = "3G"


@dataclasses.dataclass
class VmRun:
    accel: str           # "kvm" or "tcg"
    why: str             # why this acceleration
    returncode: int      # the command's, or -1 when the VM never ran it
    output: str          # console and command output, as qemu gave it
    boot_s: float        # until the command started
    total_s: float


def vng() -> str:
    """The virtme-ng launcher: beside this Python (a venv's bin) or on PATH."""
    here = Path(sys.executable).parent / "vng"
    found = str(here) if here.exists() else shutil.which("vng")
    if not found:
        raise KernelUnavailable("virtme-ng is not installed: pktassert boots other kernels with it. Fix: "
                                "pip install virtme-ng, and apt-get install qemu-system-x86 udev kmod busybox-static.")
    if not any(shutil.which(b) for b in ("busybox-static", "busybox.static", "busybox")):
        raise KernelUnavailable("busybox is not installed: virtme-ng builds the VM's initramfs (the virtio and 9p "
                                "modules of a distribution kernel) with it. Fix: apt-get install busybox-static.")
    if not shutil.which("qemu-system-x86_64"):
        raise KernelUnavailable("qemu is not installed: virtme-ng boots kernels in it. Fix: apt-get install "
                                "--no-install-recommends qemu-system-x86 udev kmod busybox-static.")
    return found


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _kvm_verdict() -> Path:
    return directory() / "kvm-refused"


def choose_accel() -> tuple[str, str]:
    """("kvm" | "tcg", why)."""
    chosen = os.environ.get(ACCEL_ENV, "").lower()
    if chosen in ("kvm", "tcg"):
        return chosen, f"${ACCEL_ENV}={chosen}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    try:
        boot, why = _kvm_verdict().read_text().split("\n", 1)
        if boot == _boot_id():
            return "tcg", f"KVM failed earlier on this machine: {why.strip()}"
    except (OSError, ValueError):
        pass
    return "kvm", "/dev/kvm works"


def _argv(image: KernelImage, accel: str, script: str, rwdirs: list[Path], overlays: list[Path],
          cpus: int) -> list[str]:
    argv = [vng(), "--run", str(image.vmlinuz), "--user", "root", "--memory", MEMORY, "--cpus", str(cpus)]
    if accel == "tcg":
        argv.append("--disable-kvm")
    for d in rwdirs:
        argv.append(f"--rwdir={d}")
    for d in overlays:
        argv.append(f"--overlay-rwdir={d}")
    return argv + ["--", f"echo {shlex.quote(STARTED)}; {script}"]


def _once(argv: list[str], timeout: float, boot_timeout: float) -> tuple[int, str, float]:
    """(exit code, output, seconds until STARTED or -1): a VM of ours, its process group killed if the
    command has not started by ``boot_timeout`` or not ended by ``timeout`` (a silent hang included)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    start = time.monotonic()
    # stdout a pipe, never a file: qemu reopens its stdout; udev keeps the command's output apart.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True, text=True, errors="replace")
    lines: list[str] = []
    started = -1.0
    stopped: list[str] = []

    def stop(why: str, unless_started: bool) -> None:
        if proc.poll() is None and not (unless_started and started >= 0):
            stopped.append(why)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    timers = [threading.Timer(boot_timeout, stop, (f"the kernel did not start the command in {boot_timeout:.0f} s", True)),
              threading.Timer(timeout, stop, (f"the VM was stopped after {timeout:.0f} s (${TIMEOUT_ENV})", False))]
    for t in timers:
        t.daemon = True
        t.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if started < 0 and STARTED in line:
                started = time.monotonic() - start
        rc = proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM: the VM goes with us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        for t in timers:
            t.cancel()
    if stopped:
        lines.append(f"\npktassert: {stopped[0]}\n")
        rc = -1
    return rc, "".join(lines), started


def default_cpus() -> int:
    """$PKTASSERT_VM_CPUS, else 2, or 1 on a machine of 2 cores or fewer: a TCG vCPU is a busy host thread, and
    the host's own run (xdist workers) keeps a core."""
    try:
        return max(1, int(os.environ[CPUS_ENV]))
    except (KeyError, ValueError):
        return 2 if (os.cpu_count() or 1) > 2 else 1


def run(image: KernelImage, script: str, rwdirs: list[Path], overlays: list[Path], cpus: int | None = None) -> VmRun:
    """``script`` (sh) as root in a VM of ``image``."""
    cpus = cpus or default_cpus()
    timeout = float(os.environ.get(TIMEOUT_ENV, 1800))
    accel, why = choose_accel()
    start = time.monotonic()
    # KVM starts a kernel in seconds; a minute without the command is a hang (seen with nested KVM).
    rc, output, started = _once(_argv(image, accel, script, rwdirs, overlays, cpus), timeout,
                                60.0 if accel == "kvm" else timeout)
    if accel == "kvm" and started < 0 and ACCEL_ENV not in os.environ:
        said = [line.strip() for line in output.splitlines() if "qemu" in line or "error" in line.lower()]
        why_not = said[0] if said else f"the guest never started (exit {rc})"
        with_tcg = f"KVM failed: {why_not}"
        try:
            directory().mkdir(parents=True, exist_ok=True)
            _kvm_verdict().write_text(f"{_boot_id()}\n{why_not}\n")
        except OSError:
            pass
        accel, why = "tcg", with_tcg
        start = time.monotonic()
        rc, output, started = _once(_argv(image, accel, script, rwdirs, overlays, cpus), timeout, timeout)
    return VmRun(accel, why, rc if started >= 0 else -1, output, max(started, 0.0), time.monotonic() - start)
