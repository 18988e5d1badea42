"""What this machine lacks for live tests, each with the exact fix."""

from __future__ import annotations

import ctypes.util
import functools
import glob
import os
import resource
import sys

FDS_NEEDED = 128  # open files: pktassert's own programs, a test's topology and a loaded filter (measured: 96 do)

# Capability bits (linux/capability.h) the live tier needs.
_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}


def missing_caps() -> list[str]:
    with open("/proc/self/status") as f:
        eff = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    missing = [name for name, bit in _CAPS.items() if not eff >> bit & 1]
    if "CAP_BPF" in missing and "CAP_SYS_ADMIN" not in missing:
        missing.remove("CAP_BPF")  # CAP_SYS_ADMIN covers BPF
    return missing


def _headers_problem() -> str | None:
    release = os.uname().release
    build = f"/lib/modules/{release}/build"
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.isdir(f"{build}/include") \
            or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return None
    amd64 = sorted(glob.glob("/usr/src/linux-headers-*-amd64"))
    if amd64:
        common = amd64[-1].replace("-amd64", "-common")
        fix = (f"ln -sfn {amd64[-1]} {build} && ln -sfn {common} /lib/modules/{release}/source "
               f"(Debian splits headers in two trees; BCC_KERNEL_SOURCE alone is not enough)")
    else:
        fix = (f"apt-get install linux-headers-amd64, then mkdir -p /lib/modules/{release} and link its "
               f"/usr/src/linux-headers-*-amd64 to {build} and …-common to …/source")
    return f"bcc needs kernel headers and finds none for kernel {release} at {build}. Fix: {fix}; `make setup` does this."


@functools.cache
def problems() -> tuple[str, ...]:
    """Empty when live tests can run here; otherwise one line per missing piece, each with its fix."""
    found = []
    caps = missing_caps()
    if caps:
        found.append(f"not privileged: missing {', '.join(caps)} (uid {os.getuid()}). Fix: run pytest as root, "
                     f"e.g. sudo .venv/bin/pytest, on a runner that allows network namespaces and BPF.")
    try:
        import bcc  # noqa: F401, PLC0415 - the probe: is Debian's bcc importable here
    except ImportError as e:
        found.append(f"bcc is not importable from {sys.executable} ({e}). Fix: apt-get install python3-bpfcc and "
                     f"make the venv with /usr/bin/python3 -m venv --system-site-packages .venv "
                     f"(`pip install bcc` is an unrelated package).")
    if not ctypes.util.find_library("bpf"):
        found.append("libbpf is not installed (libbpf.so.1): pktassert's traffic engine runs through it. "
                     "Fix: apt-get install libbpf1 (make setup installs libbpf-dev, which brings it).")
    headers = _headers_problem()
    if headers:
        found.append(headers)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < FDS_NEEDED:  # the program cache closes programs to stay within the soft limit, raised to this
        found.append(f"the open-file limit (ulimit -n) is {hard}; pktassert needs {FDS_NEEDED} (its own programs, "
                     f"a test's namespaces and a loaded filter). Fix: ulimit -n 1024 before pytest "
                     f"(docker run --ulimit nofile=1024).")
    return tuple(found)
