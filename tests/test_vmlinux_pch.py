"""vmlinux.h precompiled (pktassert/build/vmlinux_pch.py): used only where it cannot change what a
source means, and then the program clang builds is the same instruction for instruction."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pktassert.build import vmlinux_pch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "port_blocklist.bpf.c"


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    header = tmp_path / "ours" / "vmlinux.h"
    header.parent.mkdir()
    header.write_text("#ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
                      "#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)\n"
                      "#endif\ntypedef unsigned int __u32;\n#endif\n")
    return header


def _source(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "f.bpf.c"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ('#include "vmlinux.h"\nint x;\n', True),
    ('// SPDX-License-Identifier: GPL-2.0\n/* a filter\n   of ours */\n\n#include "vmlinux.h"\n', True),
    ('#define BPF_NO_PRESERVE_ACCESS_INDEX\n#include "vmlinux.h"\n', False),  # changes how vmlinux.h reads
    ('#include <bpf/bpf_helpers.h>\n#include "vmlinux.h"\n', False),         # something before it
    ('#include "other.h"\n', False),
])
def test_applies_only_when_the_source_leads_with_it(tmp_path, ours, text, expected):
    source = _source(tmp_path / "src", text)
    assert vmlinux_pch.applies(source, ["-O2", f"-I{ours.parent}"], ours) is expected


@pytest.mark.parametrize(("cflags", "expected"), [
    ((), True),
    (("-DLAST=2000", "-D", "PORT=80", "-UOTHER"), True),   # macros vmlinux.h does not test
    (("-Iinclude", "-I", "more", "-Wall", "-Wno-unused"), True),
    (("-DBPF_NO_PRESERVE_ACCESS_INDEX",), False),           # changes how vmlinux.h reads
    (("-D", "BPF_NO_PRESERVE_ACCESS_INDEX=1"), False),
    (("-U__VMLINUX_H__",), False),
    (("-O0",), False),                                      # anything else: compiled as written
    (("-include", "x.h"), False),
])
def test_the_filters_own_cflags(tmp_path, ours, cflags, expected):
    source = _source(tmp_path / "src", '#include "vmlinux.h"\n')
    assert vmlinux_pch.applies(source, [f"-I{ours.parent}", *cflags], ours, cflags) is expected


def test_a_vmlinux_h_of_the_users_own_is_theirs(tmp_path, ours):
    source = _source(tmp_path / "src", '#include "vmlinux.h"\n')
    (source.parent / "vmlinux.h").write_text("/* another kernel's */\n")  # found first: the source's folder
    assert not vmlinux_pch.applies(source, [f"-I{ours.parent}"], ours)
    (source.parent / "vmlinux.h").write_bytes(ours.read_bytes())          # the same bytes: the same meaning
    assert vmlinux_pch.applies(source, [f"-I{ours.parent}"], ours)
    assert not vmlinux_pch.applies(_source(tmp_path / "alone", '#include "vmlinux.h"\n'), [], ours)  # found nowhere


def _program_sections(obj: Path) -> str:
    """The bytes of every section but debug info and BTF (whose type order a PCH may change), and the
    relocations of the program sections (map references)."""
    names = subprocess.run(["readelf", "-W", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    kept = [ln.split("]", 1)[1].split()[0] for ln in names.splitlines() if "]" in ln and ln.strip().startswith("[")]
    kept = [n for n in kept if n and not n.startswith((".debug", ".rel.debug", ".BTF", ".rel.BTF", ".llvm", ".symtab",
                                                       ".strtab", "NULL"))]
    out = [subprocess.run(["readelf", "-x", n, str(obj)], capture_output=True, text=True).stdout for n in kept]
    relocs = subprocess.run(["readelf", "-W", "-r", str(obj)], capture_output=True, text=True, check=True).stdout
    return "\n".join([*out, *(ln for ln in relocs.splitlines() if ".debug" not in ln and ".BTF" not in ln)])


def test_the_same_program_with_and_without_it(pktassert_ready, tmp_path, monkeypatch):
    from pktassert.build import build_cache, libbpf_build

    monkeypatch.setenv(build_cache.ENV, str(tmp_path / "cache"))  # the PCH (~15 MB) goes with the test
    libbpf_build.vmlinux_dir.cache_clear()

    cc = libbpf_build.clang()
    flags = [*libbpf_build.BASE_FLAGS, *libbpf_build.include_dirs()]
    header = libbpf_build.vmlinux_dir() / "vmlinux.h"
    assert vmlinux_pch.applies(EXAMPLE, flags, header)
    pch = vmlinux_pch.pch(cc, flags, header, ("test",))
    assert pch is not None and pch.stat().st_size > 0
    # The PCH made with pktassert's flags alone, the compile with a filter's own macro beside it.
    cflags = ["-DEXTRA_PORT=8080", f"-I{tmp_path}"]
    assert vmlinux_pch.applies(EXAMPLE, [*flags, *cflags], header, cflags)
    plain, fast = tmp_path / "plain.o", tmp_path / "fast.o"
    subprocess.run([cc, *flags, *cflags, "-c", str(EXAMPLE), "-o", str(plain)], check=True)
    subprocess.run([cc, "-include-pch", str(pch), *flags, *cflags, "-c", str(EXAMPLE), "-o", str(fast)], check=True)
    assert _program_sections(plain) == _program_sections(fast)
    assert "port_blocklist" in subprocess.run(["readelf", "-W", "-s", str(fast)], capture_output=True, text=True).stdout
    libbpf_build.vmlinux_dir.cache_clear()  # the next user finds the cache it had
