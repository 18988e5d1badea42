"""What a killed build leaves in the build cache (and in /tmp) goes, a live writer's never does, and
the cache stays within its bound. Real processes killed with SIGKILL; needs clang for the link."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pktassert.build import build_cache, cache_dir, cache_upkeep

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_OBJECT = ROOT / "examples" / "build" / "port_blocklist.bpf.o"


def temporaries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob(cache_dir.TEMP + "*"))


def child(code: str, cache: Path, tmpdir: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, build_cache.ENV: str(cache), "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, **kw)


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "tmp").mkdir()
    return tmp_path / "cache", tmp_path / "tmp"


KILLED_BUILD = """
    import os, signal
    from pathlib import Path
    from pktassert.machine import reaper
    from pktassert.build import build_cache
    def make(out):
        (out.parent / "scratch.o").write_bytes(b"half" * 1000)
        out.write_bytes(b"half a product")
        print(reaper.pid(), flush=True)
        if {reaper_too}:
            os.kill(reaper.pid(), signal.SIGKILL)  # as when a container's whole PID namespace ends
        os.kill(os.getpid(), signal.SIGKILL)
    build_cache.product("k" * 32, "linked.o", make)
"""


def test_a_build_killed_midway_leaves_nothing_after_its_reaper(places):
    cache, tmpdir = places
    done = child(KILLED_BUILD.format(reaper_too=False), cache, tmpdir, stdout=subprocess.PIPE)
    reaper = int(done.stdout.readline()) if done.stdout else 0
    watch = os.pidfd_open(reaper)
    assert done.wait(60) == -signal.SIGKILL
    assert select.select([watch], [], [], 30)[0], "the reaper did not finish"
    os.close(watch)
    assert temporaries(cache) == [] and not list((cache / "linked").glob("*/linked.o"))
    assert list((cache / cache_dir.WRITERS).iterdir()) == [] and list(tmpdir.iterdir()) == []


def test_what_a_killed_build_and_its_reaper_left_goes_at_the_next_sweep(places):
    cache, tmpdir = places
    done = child(KILLED_BUILD.format(reaper_too=True), cache, tmpdir, stdout=subprocess.PIPE)
    assert done.wait(60) == -signal.SIGKILL
    left = temporaries(cache)
    assert left and not list((cache / "linked").glob("*/linked.o"))  # nothing under the final name
    gone = cache_upkeep.leftovers(cache)
    assert sorted(gone) == left and temporaries(cache) == []
    assert list(tmpdir.iterdir()) == []


@pytest.mark.skipif(not EXAMPLE_OBJECT.exists(), reason="make -C examples builds the example objects")
def test_a_link_killed_midway_leaves_nothing_in_tmp(places):
    """The issue's /tmp/tmp*/filter.o: the link's scratch files live in the cache's own temporary."""
    cache, tmpdir = places
    done = child(f"""
        import os, signal
        from pathlib import Path
        from pktassert.build import libbpf_build
        def killed(out, inputs, label):
            os.kill(os.getpid(), signal.SIGKILL)
        libbpf_build._static_link = killed
        libbpf_build.link(Path({str(EXAMPLE_OBJECT)!r}).read_bytes(), "f", "port_blocklist", "struct xdp_md *")
    """, cache, tmpdir)
    assert done.wait(120) == -signal.SIGKILL
    assert list(tmpdir.iterdir()) == []
    cache_upkeep.leftovers(cache)  # whether its reaper has finished yet or not
    assert temporaries(cache) == []


def test_a_live_writers_temporaries_are_never_swept(places):
    cache, tmpdir = places
    writer = child("""
        import sys
        from pktassert.build import build_cache
        def make(out):
            out.write_bytes(b"x")
            print("writing", flush=True)
            sys.stdin.readline()  # until the test says go
        build_cache.product("w" * 32, "linked.o", make)
    """, cache, tmpdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        live = temporaries(cache)
        assert live and cache_upkeep.leftovers(cache) == [] and temporaries(cache) == live
    finally:
        writer.kill()
        writer.wait()
    # Dead, its temporaries go: swept here, or already removed by the writer's reaper (which races the
    # sweep: CI once saw the reaper first). Either way none is left.
    swept = cache_upkeep.leftovers(cache)
    assert set(swept) <= set(live) and temporaries(cache) == []


def test_a_private_cache_goes_when_its_process_dies(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    owner = subprocess.Popen([sys.executable, "-c", "from pktassert.build import build_cache; import sys; "
                              "print(build_cache.private_folder(), flush=True); sys.stdin.readline()"],
                             env={**os.environ, "TMPDIR": str(tmp_path)}, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    folder = Path(owner.stdout.readline().strip())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert folder.is_dir() and cache_upkeep.leftovers(tmp_path / "no-cache") == []  # alive: kept
    owner.kill()
    owner.wait()
    # Dead, its cache goes: swept here, or removed by its reaper, which races the sweep (CI saw the reaper
    # mid-removal, the folder still there): bounded wait for either.
    swept: list[Path] = []
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        swept += cache_upkeep.leftovers(tmp_path / "no-cache")
        time.sleep(0.01)
    assert not folder.exists() and set(swept) <= {folder}


def _entries(cache: Path, n: int, size: int) -> list[Path]:
    for i in range(n):
        build_cache.product(f"{i:032d}", "linked.o", lambda out, i=i: out.write_bytes(bytes([i]) * size))
    folders = sorted((cache / "linked").iterdir())
    for age, folder in enumerate(reversed(folders)):  # the first made is the least recently used
        past = time.time() - 7200 - age * 60
        os.utime(folder, (past, past))
    return folders


def test_the_least_recently_used_entries_go_first(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(build_cache.ENV, str(cache))
    folders = _entries(cache, 10, 100_000)
    (cache / "objects-of-an-older-format.o").write_bytes(b"old" * 1000)
    os.utime(cache / "objects-of-an-older-format.o", (time.time() - 86400 * 30,) * 2)
    gone = cache_upkeep.evict(bound=500_000)
    assert (cache / "objects-of-an-older-format.o") in gone and not (cache / "objects-of-an-older-format.o").exists()
    assert [f for f in folders if f in gone] == folders[:len(gone) - 1]  # oldest first
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) <= 500_000
    assert all(f.exists() for f in folders[-4:])  # the most recently used stay


def test_eviction_spares_entries_in_use(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(build_cache.ENV, str(cache))
    folders = _entries(cache, 4, 100_000)
    os.utime(folders[1])  # used just now (by another run, say)
    with cache_dir.locked(folders[0]):  # being rebuilt by another worker
        gone = cache_upkeep.evict(bound=1)
    assert gone == folders[2:]


def test_the_compile_log_is_bounded(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(build_cache.ENV, str(cache))
    monkeypatch.setattr(build_cache, "LOG_LIMIT", 2000)
    for i in range(200):
        build_cache._log_compile(build_cache.root(), f"compile f{i}.bpf.c", 0.1)
    assert (cache / build_cache.COMPILES_LOG).stat().st_size <= 2100
    assert build_cache.compiles(cache)[-1]["what"] == "compile f199.bpf.c"
