"""Entry functions named with a leading underscore (xdp-tutorial's ``_fix_port_egress``) are linked and
run in both tiers, from the source and from its object; frames a tc test run refuses, and sources that
reach glibc's headers, each give one clear pktassert error naming the cause and the fix."""

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktassert import InjectError, LibbpfSource, ProgramError, TcVerdict, Verdict
from pktassert.build import libbpf_build

HERE = Path(__file__).parent / "libbpf"
UNDERSCORE = HERE / "entry_underscore.bpf.c"
needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")


@pytest.fixture(scope="session")
def underscore_object(tmp_path_factory) -> Path:
    """entry_underscore.bpf.c built the way a Makefile builds it."""
    out = tmp_path_factory.mktemp("obj") / "entry_underscore.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", *libbpf_build.include_dirs(),
                    "-c", str(UNDERSCORE), "-o", str(out)], check=True)
    return out


def _path(kind: str, obj: Path) -> str:
    return str(UNDERSCORE if kind == "source" else obj)


@needs_clang
@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.parametrize("kind", ["source", "object"])
def test_xdp_entry_with_a_leading_underscore(request, tier, kind, underscore_object, pktassert_programs):
    request.node.add_marker(pytest.mark.xdp(_path(kind, underscore_object), func="_xdp_prog"))
    xdp, inject = request.getfixturevalue("xdp"), request.getfixturevalue("inject")
    c = inject([IP(dst=xdp.ip) / UDP(dport=9), IP(dst=xdp.ip) / UDP(dport=7), IP(dst=xdp.ip) / UDP(dport=53)])
    assert c.verdicts == [Verdict.DROP, Verdict.TX, Verdict.PASS], c
    assert [r.ret for r in c] == [1, 3, 2]


@needs_clang
@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
@pytest.mark.parametrize("kind", ["source", "object"])
def test_tc_entry_with_a_leading_underscore(request, tier, kind, underscore_object, pktassert_programs):
    request.node.add_marker(pytest.mark.tc(_path(kind, underscore_object), func="_fix_port_egress"))
    tc, inject = request.getfixturevalue("tc"), request.getfixturevalue("inject")
    c = inject([IP(dst=tc.ip) / UDP(dport=9), IP(dst=tc.ip) / UDP(dport=53)] * 3)
    assert c.verdicts == [TcVerdict.SHOT, TcVerdict.OK] * 3, c
    assert [r.ret for r in c] == [2, 0] * 3


# -- 12a: frames a tc test run refuses --------------------------------------------------------------

TC_GUARD = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("tc")
int tc_guard(struct __sk_buff *skb) { return skb->len > 1000 ? 2 : 0; }
char LICENSE[] SEC("license") = "GPL";
"""
CUT_IPV4 = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)) + b"\x45\x00\x00\x1c\x00\x01"
CUT_IPV6 = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x86DD)) + bytes(8) * 3
LIVE_FIX = 'or test it in the live tier (@pytest.mark.parametrize("tier", ["live"], indirect=True))'


def _refused(inject, *args, **kwargs) -> str:
    with pytest.raises(InjectError) as e:
        inject(*args, **kwargs)
    assert not isinstance(e.value, OSError)
    return str(e.value)


@needs_clang
@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.tc(TC_GUARD, func="tc_guard")
def test_tc_unit_frame_with_a_cut_ipv4_header(tc, inject):
    msg = _refused(inject, [IP(dst=tc.ip) / UDP(dport=9), CUT_IPV4])
    assert msg == ("the kernel refused packet #1, a 20-byte IPv4 frame (EtherType 0x0800), for a tc test run "
                   "(BPF_PROG_TEST_RUN: Invalid argument): it takes an IPv4 frame only with its whole 20-byte IPv4 "
                   "header, and this one has 6 bytes of it. Fix: a frame with the whole header (34 bytes or more), "
                   + LIVE_FIX + ", where the kernel hands tc the frame as it came.")
    with pytest.raises(InjectError, match=r"^the kernel refused packet #0, a 20-byte IPv4 frame .* has 6 bytes of it"):
        tc.run(CUT_IPV4)  # run() goes the same way


@needs_clang
@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.tc(TC_GUARD, func="tc_guard")
def test_tc_unit_frame_with_a_cut_ipv6_header(tc, inject):
    msg = _refused(inject, CUT_IPV6)
    assert msg.startswith("the kernel refused packet #0, a 38-byte IPv6 frame (EtherType 0x86dd), for a tc test run "
                          "(BPF_PROG_TEST_RUN: Invalid argument): it takes an IPv6 frame only with its whole 40-byte "
                          "IPv6 header, and this one has 24 bytes of it. Fix: a frame with the whole header (54 bytes "
                          "or more), " + LIVE_FIX), msg


@needs_clang
@pytest.mark.parametrize("tier", ["live"], indirect=True)
@pytest.mark.tc(TC_GUARD, func="tc_guard")
def test_the_cut_frames_reach_tc_in_the_live_tier(tc, inject):
    """What the refusal's fix says: live, tc sees the frames as sent."""
    c = inject([CUT_IPV4, CUT_IPV6])
    assert c.verdicts == [TcVerdict.OK, TcVerdict.OK], c


@needs_clang
@pytest.mark.parametrize("tier", ["unit"], indirect=True)
@pytest.mark.tc(TC_GUARD, func="tc_guard")
def test_tc_unit_sk_buff_fields_the_kernel_refuses(tc, inject):
    pkt = IP(dst=tc.ip) / UDP(dport=9)  # a 42-byte frame
    msg = _refused(inject, pkt, wire_len=10)
    assert msg == ("the kernel refused packet #0, a 42-byte IPv4 frame (EtherType 0x0800), for a tc test run "
                   "(BPF_PROG_TEST_RUN: Invalid argument): wire_len=10 is less than the frame the test run carries "
                   "(42 bytes and pktassert's 8-byte tag after it). Fix: wire_len= from 50 to 65536, or leave it out.")
    msg = _refused(inject, pkt, wire_len=70000)
    assert "wire_len=70000 is more than the kernel takes (65536). Fix: wire_len= from 50 to 65536" in msg
    msg = _refused(inject, pkt, gso_segs=70000)
    assert msg.endswith("(BPF_PROG_TEST_RUN: Invalid argument): gso_segs=70000 is more than the kernel takes "
                        "(65535). Fix: gso_segs= up to 65535."), msg
    msg = _refused(inject, pkt, ifindex=99999)
    assert msg.endswith("(BPF_PROG_TEST_RUN: No such device): ifindex=99999 names no interface the test run can "
                        "find (the kernel looks up an ifindex above 1 in the test's network namespace). Fix: "
                        "ifindex=1 (lo), or leave it out."), msg
    assert inject(pkt, wire_len=50, gso_segs=65535, ifindex=1).verdict == TcVerdict.OK  # the limits themselves


# -- 12b: a source that reaches glibc's headers -----------------------------------------------------

SHIM = Path(__file__).parent / "third_party" / "include-shim"
needs_no_i386_libc = pytest.mark.skipif(
    any(Path(d, "gnu", "stubs-32.h").exists() for d in ("/usr/include", "/usr/include/x86_64-linux-gnu")),
    reason="libc6-dev-i386 is installed: glibc's headers compile for -target bpf here")


def _compile_error(source: Path, func: str = "f", cflags: tuple[str, ...] = ()) -> str:
    with pytest.raises(ProgramError) as e:
        LibbpfSource(source, func, cflags=cflags).load().close()
    return str(e.value)


@needs_clang
@needs_no_i386_libc
def test_a_libc_header_next_to_vmlinux_h(tmp_path, pktassert_ready):
    src = tmp_path / "libc.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include <netinet/in.h>\n'
                   'SEC("xdp") int f(struct xdp_md *ctx) { return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n')
    msg = _compile_error(src)
    assert msg.startswith(f"{src} (a libbpf source) does not compile with clang: it includes glibc's headers, which "
                          f"do not build for BPF (`clang -target bpf`).\n"), msg
    assert (f"your #include that leads there:\n  {src}:3: #include <netinet/in.h>\n"
            f"clang's include chain:\nIn file included from {src}:3:\n") in msg
    assert "gnu/stubs.h:7:11: fatal error: 'gnu/stubs-32.h' file not found" in msg
    assert ('Fix: drop #include <netinet/in.h>: "vmlinux.h" (line 1) has the kernel\'s types and structs '
            "already (IPPROTO_UDP and the other IPPROTO_*, struct in_addr among them), <bpf/bpf_endian.h> has "
            "bpf_htons() and "
            "bpf_ntohs().") in msg
    assert "libbpf programs include \"vmlinux.h\"" not in msg  # not the generic hint


@needs_clang
@needs_no_i386_libc
def test_stdint_h_is_glibc_under_clang(tmp_path, pktassert_ready):
    src = tmp_path / "ints.bpf.c"
    src.write_text('#include <linux/bpf.h>\n#include <stdint.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int f(struct xdp_md *ctx) { uint32_t v = XDP_PASS; return v; }\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    msg = _compile_error(src)
    assert f"your #include that leads there:\n  {src}:2: #include <stdint.h>\n" in msg
    assert "Fix: include <linux/types.h> instead of <stdint.h> (__u8, __u16, __u32, __u64, __s32...)" in msg
    fixed = tmp_path / "fixed.bpf.c"
    fixed.write_text(src.read_text().replace("<stdint.h>", "<linux/types.h>").replace("uint32_t", "__u32"))
    LibbpfSource(fixed, "f").load().close()  # the fix the message gives compiles and loads


@needs_clang
@needs_no_i386_libc
def test_a_kernel_header_that_reaches_glibc_through_the_users_header(tmp_path, pktassert_ready):
    """xdp-tutorial's case: its common/parsing_helpers.h includes <linux/icmp.h>, and <linux/if.h> under it
    includes glibc's <sys/socket.h>."""
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "helpers.h").write_text("#pragma once\n#include <linux/icmp.h>\n")
    src = tmp_path / "prog.bpf.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include "common/helpers.h"\n'
                   'SEC("xdp") int f(struct xdp_md *ctx) { return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n')
    msg = _compile_error(src)
    helpers = tmp_path / "common" / "helpers.h"
    assert (f"your #include that leads there:\n  {src}:3: #include \"common/helpers.h\"\n"
            f"  {helpers}:2: #include <linux/icmp.h>\n") in msg
    assert ("<linux/icmp.h> is a kernel header, but it reaches glibc: <linux/if.h> includes <sys/socket.h> "
            "outside the kernel.") in msg
    assert ("give clang an empty gnu/stubs-32.h: `mkdir -p include-shim/gnu && touch include-shim/gnu/stubs-32.h` "
            "and cflags=(\"-I/path/to/include-shim\",)") in msg
    assert "or install libc6-dev-i386 (what xdp-tutorial's setup asks for)" in msg
    LibbpfSource(src, "f", cflags=(f"-I{SHIM}",)).load().close()  # the shim is the fix
