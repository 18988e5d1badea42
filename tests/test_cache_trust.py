"""The build cache root can rely on: whose it is, what is in it, and what a fault leaves there.

Each test runs a small real suite (two libbpf filters, drop-all and pass-all, in the unit tier) in a
child pytest with its own cache folder, after doing to that folder what another user, a bit flip, a
read-only mount or a full disk would. Needs root (chown to nobody, private mounts) and clang."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktassert.build import build_cache

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to another user, private mount namespaces"),
    pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang"),
]

NOBODY = 65534
FILTER = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("xdp") int {name}(struct xdp_md *ctx) {{ return {verdict}; }}
char LICENSE[] SEC("license") = "GPL";
"""
SUITE = """\
import pytest
from scapy.layers.inet import IP, UDP
from pktassert import LibbpfSource, Verdict

@pytest.mark.xdp("drop_all.bpf.c", "drop_all")
def test_drop_all_drops(xdp, inject):
    assert inject(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.DROP

@pytest.mark.xdp("pass_all.bpf.c", "pass_all")
def test_pass_all_passes(xdp, inject):
    assert inject(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.PASS
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "drop_all.bpf.c").write_text(FILTER.format(name="drop_all", verdict="XDP_DROP"))
    (folder / "pass_all.bpf.c").write_text(FILTER.format(name="pass_all", verdict="XDP_PASS"))
    (folder / "test_two.py").write_text(SUITE)
    return folder


def run(suite: Path, cache: Path | None, *, prefix: tuple[str, ...] = (), env: dict | None = None,
        ) -> subprocess.CompletedProcess:
    """The suite in a child pytest (unit tier), with ``cache`` as --pktassert-cache-dir if given."""
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--pktassert-tier", "unit",
            "--pktassert-require", "--rootdir", str(suite), str(suite)]
    if cache is not None:
        args += ["--pktassert-cache-dir", str(cache)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PKTASSERT_", "XDG_", "PYTEST_"))}
    child_env.update(env or {})
    return subprocess.run([*prefix, *args], capture_output=True, text=True, env=child_env, cwd=suite, timeout=300)


def said(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def passed(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == 0 and "2 passed" in done.stdout


def files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() or p.is_symlink())


def test_a_cache_folder_another_user_owns_is_refused(suite, tmp_path):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.chown(cache, NOBODY, NOBODY)
    done = run(suite, cache)
    assert done.returncode != 0, said(done)
    out = said(done)
    assert f"{cache}" in out and "owned by" in out and "uid 65534" in out and "Fix:" in out, out
    assert "Traceback" not in out and "passed" not in done.stdout, out


def test_a_cache_folder_others_can_write_is_refused(suite, tmp_path):
    cache = tmp_path / "open-cache"
    cache.mkdir()
    cache.chmod(0o777)
    done = run(suite, cache)
    out = said(done)
    assert done.returncode != 0 and "writable by others" in out and "Fix:" in out and "Traceback" not in out, out


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder other users can reach (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="pktassert-test-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_objects_another_user_swapped_never_decide_a_verdict(suite, shared):
    """The issue's attack: nobody swaps two cached linked objects in a cache it can write."""
    cache = shared / "cache"
    assert passed(first := run(suite, cache)), said(first)
    for p in [cache, *cache.rglob("*")]:
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
    linked = [p for p in files(cache) if p.name.endswith("linked.o")]
    assert len(linked) == 2, linked
    a, b = linked
    swap = f"mv {a} {a}.x && mv {b} {a} && mv {a}.x {b}"
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", swap], check=True)
    done = run(suite, cache)
    out = said(done)
    assert done.returncode != 0 and "owned by" in out and "uid 65534" in out and "Traceback" not in out, out


def test_the_default_cache_in_a_users_home_is_not_used_under_sudo(suite, tmp_path):
    """sudo -E keeps the user's HOME: root's run must not load what that user left in ~/.cache."""
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    shutil.chown(home, NOBODY, NOBODY)
    shutil.chown(home / ".cache", NOBODY, NOBODY)
    done = run(suite, None, env={"HOME": str(home)})
    out = said(done)
    assert passed(done), out
    assert "build cache" in out and "owned by" in out and "uid 65534" in out, out  # said in the header, not silent
    assert not (home / ".cache" / "pktassert").exists()


def test_entries_not_ours_or_writable_by_others_are_rebuilt(suite, tmp_path):
    cache = tmp_path / "cache"
    assert passed(run(suite, cache))
    linked = sorted(p for p in files(cache) if p.name.endswith("linked.o"))
    a, b = linked
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)  # swapped contents, as a planted entry would be
    b.write_bytes(data_a)
    os.chown(a, NOBODY, NOBODY)
    b.chmod(0o666)
    done = run(suite, cache)
    assert passed(done), said(done)


def test_symlinks_planted_in_the_cache_are_never_followed(suite, tmp_path):
    cache = tmp_path / "cache"
    assert passed(run(suite, cache))
    victims = tmp_path / "victims"
    victims.mkdir()
    planted = files(cache)
    assert planted
    for i, p in enumerate(planted):  # every file (entries, locks, logs, records) becomes a link elsewhere
        victim = victims / f"v{i}"
        victim.write_bytes(b"root's file outside the cache\n")
        p.unlink()
        p.symlink_to(victim)
    # and the names a run creates as it goes: the compile log, locks
    before = {v: (v.read_bytes(), v.stat().st_mtime_ns) for v in victims.iterdir()}
    done = run(suite, cache)
    assert passed(done), said(done)
    after = {v: (v.read_bytes(), v.stat().st_mtime_ns) for v in victims.iterdir()}
    assert after == before


def test_a_corrupted_entry_is_rebuilt(suite, tmp_path):
    cache = tmp_path / "cache"
    assert passed(run(suite, cache))
    objects = [p for p in files(cache) if p.suffix in (".o", ".h")]
    assert objects
    for i, p in enumerate(objects):
        data = bytearray(p.read_bytes())
        if i % 2:
            p.write_bytes(data[: len(data) // 2])  # truncated
        else:
            data[len(data) // 3] ^= 0xFF  # one byte flipped
            p.write_bytes(bytes(data))
    done = run(suite, cache)
    assert passed(done), said(done)
    assert passed(run(suite, cache))  # and the rebuilt entries are good ones


def _private_mount(script: str) -> tuple[str, ...]:
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")


def test_a_read_only_cache_gives_a_private_one_with_a_warning(suite, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    done = run(suite, cache, prefix=_private_mount(f'mount --bind -o ro {cache} {cache} && exec "$@"'))
    out = said(done)
    assert passed(done), out
    assert "read-only" in out.lower() and "temporary" in out and "Traceback" not in out, out


def test_a_full_disk_leaves_nothing_partial_and_the_run_passes(suite, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    # 1 MiB: the compiled objects fit, vmlinux.h (megabytes) does not
    script = f'mount -t tmpfs -o size=1m,mode=0700 pktassert-test {cache} && exec "$@"'
    listing = tmp_path / "listing"
    done = run(suite, cache, prefix=_private_mount(script.replace('exec "$@"', f'"$@"; rc=$?; '
                                                                  f'find {cache} > {listing}; exit $rc')))
    out = said(done)
    assert passed(done), out
    assert "No space left" in out or "full" in out, out  # the warning says why
    left = [ln for ln in listing.read_text().splitlines() if "vmlinux" in ln or ".tmp" in ln or ln.endswith(".part")]
    assert left == [], left


def test_a_bcc_run_writes_only_to_the_chosen_cache_and_cleanup_removes_it(tmp_path):
    cache = tmp_path / "cache"
    suite = tmp_path / "bcc"
    suite.mkdir()
    (suite / "test_bcc.py").write_text(
        "import pytest\nfrom scapy.layers.inet import IP, UDP\nfrom pktassert import Verdict\n"
        "SRC = 'int drops(struct xdp_md *ctx) { return XDP_DROP; }'\n"
        "@pytest.mark.xdp(SRC, 'drops')\n"
        "def test_drops(xdp, inject):\n    assert inject(IP(dst=xdp.ip) / UDP()).verdict == Verdict.DROP\n")
    home = tmp_path / "home"
    home.mkdir()
    done = run(suite, cache, env={"HOME": str(home)})
    assert done.returncode == 0, said(done)
    # bcc compiles each load once, in a child, and keeps no records (they were for a second compile)
    assert not any(p.parent.name.startswith("compiles-") for p in files(cache)), files(cache)
    assert not (home / ".cache" / "pktassert").exists()
    clean = subprocess.run([sys.executable, "-m", "pktassert.cleanup", "--cache"], capture_output=True, text=True,
                           env={**os.environ, build_cache.ENV: str(cache)})
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not cache.exists() or files(cache) == [], files(cache)
