"""Which kernel a name means: ``6.1`` or ``6.12`` (Debian 12's kernels: the newest such package its
apt sources carry, fetched once and kept), a full Debian package name, or a path to a vmlinuz whose
modules sit in ``<root>/lib/modules/<release>`` as a package unpacks them (virtme-ng finds them there).

apt-get and dpkg-deb are run as programs: python3-apt is not a dependency of ours and dpkg-deb has no
library; both are on every Debian machine."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pktassert.build import build_cache
from pktassert.errors import PktassertError

HOST = "host"
# A short name -> the Debian package names it may mean (the newest version wins).
DEBIAN_SERIES = {
    "6.1": r"linux-image-6\.1\.0-[0-9]+-amd64-unsigned",
    "6.12": r"linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned",
}
KERNEL_DIR_ENV = "PKTASSERT_KERNEL_DIR"


class KernelUnavailable(PktassertError):
    """A kernel named with --pktassert-kernel cannot be found or fetched."""


@dataclasses.dataclass(frozen=True)
class KernelImage:
    name: str        # as the user named it: "6.1", a package, a path
    release: str     # uname -r inside
    vmlinuz: Path
    source: str      # where it came from: the Debian package and version, or the path

    @property
    def modules(self) -> Path:
        return self.vmlinuz.parent.parent / "lib" / "modules" / self.release


def directory() -> Path:
    """$PKTASSERT_KERNEL_DIR, else ``kernels`` beside the build cache (~/.cache/pktassert/kernels)."""
    chosen = os.environ.get(KERNEL_DIR_ENV)
    return Path(chosen) if chosen else build_cache.directory().parent / "kernels"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelUnavailable(f"{argv[0]} is not installed: pktassert fetches Debian's kernel packages with it. "
                                f"Fix: run on Debian or Ubuntu, or name a vmlinuz of your own "
                                f"(--pktassert-kernel=/path/to/vmlinuz).") from None
    if done.returncode:
        raise KernelUnavailable(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def debian_package(name: str) -> tuple[str, str]:
    """(package, version) of the newest package a short name or package name means."""
    pattern = DEBIAN_SERIES.get(name, re.escape(name))
    found = _run(["apt-cache", "search", "--names-only", f"^{pattern}$"])
    names = [line.split(" ", 1)[0] for line in found.splitlines() if re.fullmatch(pattern, line.split(" ", 1)[0])]
    if not names:
        known = ", ".join(DEBIAN_SERIES)
        raise KernelUnavailable(f"no Debian kernel package matches {name!r} in this machine's apt sources. "
                                f"Fix: name one of {known}, a package (linux-image-...-amd64-unsigned), or a "
                                f"vmlinuz path; after `apt-get update` if the sources are stale.")
    package = max(names, key=_version_key)
    policy = _run(["apt-cache", "policy", package])
    version = re.search(r"Candidate:\s*(\S+)", policy)
    return package, version.group(1) if version else "?"


def _version_key(package: str) -> list[int]:
    return [int(n) for n in re.findall(r"[0-9]+", package)]


def _unpacked(package: str, version: str) -> Path:
    """The package unpacked in the kernel cache (fetched the first time; two runs at once each unpack
    into a folder of their own and the first to finish names it)."""
    root = directory() / f"{package}_{version}"
    if root.is_dir():
        return root
    directory().mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=directory()))
    try:
        _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=work)
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise KernelUnavailable(f"apt-get download {package}={version} left {len(debs)} packages in {work}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")])
        try:
            os.rename(work / "root", root)
        except OSError:
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def _link_headers(image: KernelImage) -> None:
    """bcc compiles against /lib/modules/<release>/build: Debian's 6.1 headers, as `make headers` links them
    for this machine (bcc takes only types from them; bcc 0.26 cannot compile against 6.12's)."""
    trees = sorted(glob.glob("/usr/src/linux-headers-6.1.*-amd64"), key=_version_key)
    if not trees or not image.modules.is_dir():
        return
    for name, target in (("build", trees[-1]), ("source", trees[-1][:-len("-amd64")] + "-common")):
        link = image.modules / name
        if not link.is_symlink() or os.readlink(link) != target:
            link.unlink(missing_ok=True)
            link.symlink_to(target)


def _release(vmlinuz: Path) -> str:
    m = re.match(r"vmlinu[xz]-(.+)$", vmlinuz.name)
    if m:
        return m.group(1)
    modules = sorted((vmlinuz.parent.parent / "lib" / "modules").glob("*"))
    if len(modules) == 1:
        return modules[0].name
    raise KernelUnavailable(f"cannot tell the release of {vmlinuz}: name it vmlinuz-<release>, beside "
                            f"../lib/modules/<release>")


def resolve(name: str) -> KernelImage:
    """The kernel a --pktassert-kernel name means, fetched if need be."""
    if "/" in name or name.startswith("vmlinuz"):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise KernelUnavailable(f"--pktassert-kernel={name}: no such file. Fix: a vmlinuz path, or one of "
                                    f"{', '.join(DEBIAN_SERIES)}, or a Debian package name.")
        return KernelImage(name, _release(path), path, str(path))
    package, version = debian_package(name)
    root = _unpacked(package, version)
    vmlinuz = next(iter(sorted((root / "boot").glob("vmlinuz-*"))), None)
    if vmlinuz is None:
        raise KernelUnavailable(f"{package} {version} holds no boot/vmlinuz-*: not a kernel image package")
    image = KernelImage(name, _release(vmlinuz), vmlinuz, f"Debian {package} {version}")
    _link_headers(image)
    return image
