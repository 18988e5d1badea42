"""Errors a user can cause with a libbpf source or an ELF object: one clear message each, naming the
kind of filter detected, the cause and the fix; nothing left behind (no fds, no programs)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pktassert import LibbpfSource, ObjectFile, ProgramError
from pktassert.build import libbpf_build
from pktassert.errors import HostLacks
from pktassert.machine import host
from pktassert.programs.subjects import subject_of

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
pytestmark = [needs_clang, pytest.mark.usefixtures("pktassert_ready")]

GOOD = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("xdp")
int pass_all(struct xdp_md *ctx) { return XDP_PASS; }
SEC("tc")
int tc_prog(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def build(tmp_path: Path, text: str, *flags: str, name: str = "prog") -> Path:
    src, obj = tmp_path / f"{name}.bpf.c", tmp_path / f"{name}.bpf.o"
    src.write_text(text)
    subprocess.run(["clang", "-O2", "-target", "bpf", *flags, *libbpf_build.include_dirs(), "-c", str(src), "-o", str(obj)],
                   check=True)
    return obj


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def refused(subject, pattern: str) -> str:
    before = open_fds()
    with pytest.raises(ProgramError, match=pattern) as e:
        subject.load().close()
    assert open_fds() == before, "a failed load left fds open"
    return str(e.value)


def test_missing_header(tmp_path):
    src = tmp_path / "f.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include "no_such_header.h"\n'
                   'SEC("xdp") int f(void *c) { return 2; }\n')
    msg = refused(subject_of(src, "f"), r"f\.bpf\.c \(a libbpf source\) does not compile with clang")
    assert "'no_such_header.h' file not found" in msg and "Fix:" in msg and "-I" in msg


def test_not_an_elf(tmp_path):
    bogus = tmp_path / "filter.o"
    bogus.write_bytes(b"this is not an object\n")
    msg = refused(subject_of(bogus, "f"), r"filter\.o \(ELF object\) is not an ELF object")
    assert "clang -O2 -g -target bpf -c" in msg


def test_host_object_is_not_bpf(tmp_path):
    src = tmp_path / "host.c"
    src.write_text("int f(void) { return 0; }\n")
    obj = tmp_path / "host.o"
    subprocess.run(["clang", "-c", str(src), "-o", str(obj)], check=True)
    refused(ObjectFile(obj, "f"), r"an ELF object for another machine \(e_machine 62\), not BPF")


def test_object_without_the_named_program(tmp_path):
    obj = build(tmp_path, GOOD, "-g")
    msg = refused(subject_of(obj, "xdp_nope"), r"has no program named 'xdp_nope'")
    assert 'pass_all() in SEC("xdp") [xdp]' in msg and 'tc_prog() in SEC("tc") [sched_cls]' in msg


def test_object_program_of_another_type(tmp_path):
    obj = build(tmp_path, GOOD, "-g")
    refused(subject_of(obj, "tc_prog"), r'tc_prog\(\) is a sched_cls program \(SEC\("tc"\)\), not an XDP program\. '
                                        r'Fix: put it at tc: @pytest.mark.tc')


def test_program_found_by_section_name(tmp_path):
    obj = build(tmp_path, GOOD.replace('SEC("tc")\nint tc_prog(struct __sk_buff *skb) { return 0; }\n', ""), "-g")
    loaded = subject_of(obj, "xdp").load()
    try:
        assert loaded.func == "pass_all"
    finally:
        loaded.close()


def test_object_without_btf(tmp_path):
    obj = build(tmp_path, GOOD.replace('#include "vmlinux.h"', "#include <linux/bpf.h>").replace(
        'SEC("tc")\nint tc_prog(struct __sk_buff *skb) { return 0; }\n', ""))  # no -g: no BTF
    refused(subject_of(obj, "pass_all"), r"has no BTF: .* Fix: build it with -g")


def test_clang_missing_is_the_hosts_lack(tmp_path, monkeypatch):
    src = tmp_path / "f.bpf.c"
    src.write_text(GOOD)
    monkeypatch.setenv("PATH", str(tmp_path))  # no clang on it
    host.problem.cache_clear()  # probed once per process: again, with this PATH
    try:
        before = open_fds()
        with pytest.raises(HostLacks, match=r"clang is not installed: .*Fix: apt-get install clang libbpf-dev") as e:
            LibbpfSource(src, "pass_all").load().close()
        assert e.value.need == "clang" and open_fds() == before
    finally:
        host.problem.cache_clear()


def test_verifier_rejection_names_the_source_line(tmp_path):
    src = tmp_path / "oob.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n\nSEC("xdp")\nint oob(struct xdp_md *ctx)\n{\n'
                   '\tunsigned char *data = (void *)(long)ctx->data;\n'
                   '\treturn data[40] == 6 ? XDP_DROP : XDP_PASS;   /* no bounds check */\n}\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    msg = refused(LibbpfSource(src, "oob"), r"the verifier rejected oob\(\) from .*oob\.bpf\.c \(libbpf source\)")
    assert "invalid access to packet" in msg
    assert "oob.bpf.c:8: return data[40] == 6 ? XDP_DROP : XDP_PASS;" in msg


def test_the_same_failure_from_the_object(tmp_path):
    text = ('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("xdp")\nint oob(struct xdp_md *ctx)\n{\n'
            '\tunsigned char *data = (void *)(long)ctx->data;\n\treturn data[40];\n}\nchar LICENSE[] SEC("license") = "GPL";\n')
    obj = build(tmp_path, text, "-g", name="oob")
    msg = refused(ObjectFile(obj, "oob"), r"the verifier rejected oob\(\) from .*oob\.bpf\.o \(ELF object\)")
    assert "oob.bpf.c:7: return data[40];" in msg


def test_globals_that_do_not_exist_or_fit(tmp_path):
    src = tmp_path / "g.bpf.c"
    src.write_text(GOOD.replace("SEC(\"xdp\")", "const volatile __u8 limit = 1;\nSEC(\"xdp\")"))
    refused(LibbpfSource(src, "pass_all", globals=(("nope", 1),)), r"globals=\['nope'\]: .* its globals: limit")
    refused(LibbpfSource(src, "pass_all", globals=(("limit", 300),)), r"300 does not fit c_ubyte")


def test_globals_for_a_bcc_source_refused(tmp_path):
    with pytest.raises(ProgramError, match="bcc sources keep their state in maps"):
        subject_of("int f(struct xdp_md *ctx) { return XDP_PASS; }", "f", globals={"x": 1})


def test_marker_failure_names_the_kind(pytester):
    pytester.makepyfile(test_it='''
        import pytest
        @pytest.mark.xdp("missing_include.bpf.c", func="f")
        def test_f(xdp):
            pass
    ''')
    (pytester.path / "missing_include.bpf.c").write_text('#include "nope.h"\nSEC("xdp") int f(void *c) { return 2; }\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pktassert: *missing_include.bpf.c (a libbpf source) does not compile with clang*"])


def test_a_long_verifier_log_keeps_its_end(tmp_path):
    # A million instructions: the log runs to megabytes, and the reason is at its end.
    src = tmp_path / "heavy.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n\nSEC("xdp")\nint heavy(struct xdp_md *ctx)\n{\n'
                   '\tunsigned char *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;\n'
                   '\t__u64 acc = 0;\n\tif (data + 1 > end)\n\t\treturn XDP_PASS;\n'
                   '\tfor (__u32 i = 0; i < 2000000; i++) {\n\t\tacc += ((i * 2654435761u) >> 7) ^ data[0];\n'
                   '\t\tif (acc == 12345678)\n\t\t\tbreak;\n\t}\n\treturn acc & 1 ? XDP_DROP : XDP_PASS;\n}\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    refused(LibbpfSource(src, "heavy"),
            r"the verifier rejected heavy\(\) from .*heavy\.bpf\.c \(libbpf source\): BPF program is too large")


def test_a_file_that_is_not_c_is_compiled_as_c_and_refused_with_clangs_words(tmp_path):
    # A README that mentions SEC("xdp") looks like a libbpf source; clang would take "notes.md" for a linker
    # input and make no object at all (once a raw FileNotFoundError from the build cache).
    notes = tmp_path / "notes.md"
    notes.write_text('Our filter lives in SEC("xdp") of filter.bpf.c.\n')
    with pytest.raises(ProgramError, match=r"notes\.md:1:\d+: error"):
        subject_of(notes, "filter").load()
