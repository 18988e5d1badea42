"""The build cache of libbpf filters: keyed by everything that decides the object (the source and what
it includes, flags), shared by runs, cleared by pktassert-cleanup --cache. Needs clang, not root."""

import shutil
import subprocess
import sys

import pytest

from pktassert import LibbpfSource
from pktassert.build import build_cache, libbpf_build
from pktassert.kernel.elf_entry import ElfObject, entry_into_text

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")

SOURCE = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "limits.h"
static __noinline int helper(int x) { return x + LIMIT; }
SEC("xdp") int first(struct xdp_md *ctx) { return XDP_PASS; }
SEC("xdp") int second(struct xdp_md *ctx) { return helper(ctx->ingress_ifindex) > 100 ? XDP_DROP : XDP_PASS; }
SEC("xdp") int third(struct xdp_md *ctx) { return XDP_TX; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(build_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def source(tmp_path):
    (tmp_path / "limits.h").write_text("#define LIMIT 1\n")
    path = tmp_path / "f.bpf.c"
    path.write_text(SOURCE)
    return path


def compiles(cache):
    return [c["what"] for c in build_cache.compiles(cache) if c["what"].startswith("compile")]


def test_compiled_once_then_from_the_cache(cache, source):
    first, cached = libbpf_build.compile_source(source, ())
    assert not cached
    again, cached = libbpf_build.compile_source(source, ())
    assert cached and again == first and compiles(cache) == ["compile f.bpf.c"]


def test_an_included_header_edit_recompiles(cache, source):
    before, _ = libbpf_build.compile_source(source, ())
    (source.parent / "limits.h").write_text("#define LIMIT 2\n")
    after, cached = libbpf_build.compile_source(source, ())
    assert not cached and after != before and after.read_bytes() != before.read_bytes()
    assert len(compiles(cache)) == 2


def test_other_flags_are_another_entry(cache, source):
    libbpf_build.compile_source(source, ())
    _, cached = libbpf_build.compile_source(source, ("-DPKTTEST_LIMIT_TWO=1",))
    assert not cached and len(compiles(cache)) == 2


def test_cleanup_empties_it(cache, source):
    libbpf_build.compile_source(source, ())
    done = subprocess.run([sys.executable, "-m", "pktassert.cleanup", "--cache"], capture_output=True, text=True)
    assert done.returncode == 0 and f"emptied the build cache {cache}" in done.stdout
    assert not cache.exists()
    assert not libbpf_build.compile_source(source, ())[1]


def test_entry_moved_into_text_unchanged(cache, source):
    """The entry's instructions are the same bytes in .text; the programs around it keep theirs."""
    obj, _ = libbpf_build.compile_source(source, ())
    data = obj.read_bytes()
    before = ElfObject(data, "f")
    moved = ElfObject(entry_into_text(data, "second", "f"), "f")

    def body(elf, name):
        (_, _, _, shndx, value, size), = [s for s in elf.symbols() if s[0] == name]
        return elf.sections[shndx].name, bytes(elf.sections[shndx].data[value:value + size])

    section, code = body(before, "second")
    assert section == "xdp"
    assert body(moved, "second") == (".text", code)
    assert body(moved, "first") == body(before, "first")
    assert body(moved, "third") == body(before, "third")       # it came after the cut: shifted, same bytes
    assert body(moved, "helper") == body(before, "helper")     # .text's own function stays at its offset


def test_programs_around_the_entry_still_load(cache, source, pktassert_ready):
    loaded = LibbpfSource(source, "second").load()
    try:
        assert loaded.program_fd("first") > 0 and loaded.program_fd("third") > 0
        assert loaded.runner.run(b"\0" * 64).retval == 2  # XDP_PASS: a test run comes in on lo (ifindex 1)
    finally:
        loaded.close()


def test_a_changed_inspector_is_linked_anew(tmp_path, monkeypatch):
    # Every build of pktassert's inspector is named inspector.o: the link of a filter with it was keyed by that
    # name, so after an inspector change (a pktassert upgrade) the cache served the old inspector's link.
    from pktassert.build import build_cache, libbpf_build

    keys = []
    monkeypatch.setattr(build_cache, "product", lambda key, name, make: (keys.append(key), (tmp_path / "x", True))[1])
    for content in (b"inspector, before", b"inspector, after"):
        ours = tmp_path / str(len(keys)) / "inspector.o"
        ours.parent.mkdir()
        ours.write_bytes(content)
        monkeypatch.setattr(libbpf_build, "_inspector", lambda *a, ours=ours: (ours, False))
        libbpf_build.link(b"the user's object", "label", "f", "struct __sk_buff *", hook="tc")
    assert len(keys) == 2 and keys[0] != keys[1]
