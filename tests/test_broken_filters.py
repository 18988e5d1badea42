"""Broken filters and bad Program inputs: each fails only its own tests, with one message that
names the cause (the compiler's or the verifier's own words) and the fix."""

import re

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Program, ProgramError, Verdict

HEADER = "import pytest\nfrom scapy.layers.inet import IP, TCP\nfrom pktassert import Verdict, Program\n"
PASS_ALL = "int pass_all(struct xdp_md *ctx) { return XDP_PASS; }"
OTHER_TEST = f"""
@pytest.mark.xdp({PASS_ALL!r}, func="pass_all")
def test_other(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP()).verdict == Verdict.PASS
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=HEADER + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """A fresh record of compiled sources for each test: every check runs as on a new machine."""
    from pktassert.build import build_cache

    monkeypatch.setenv(build_cache.ENV, str(tmp_path_factory.mktemp("cache")))


# 1. LLVM's backend rejects the program: it used to end the whole pytest process (exit 1, no word).

BIG_STACK = """\
int big(struct xdp_md *ctx)
{{
    volatile char buf[{n}];
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (data + 1 > end)
        return XDP_PASS;
    buf[0] = *(char *)data;
    for (int i = 1; i < {n}; i++)
        buf[i] = buf[i - 1] + 1;
    return buf[{n} - 1] == 3 ? XDP_DROP : XDP_PASS;
}}
"""


@pytest.mark.parametrize("n, expected", [
    (490, ["*big.c does not compile: big() and pktassert's inspector share BPF's 512-byte stack*",
           ("*The inspector takes * bytes, which leaves * for the filter; big() alone uses * bytes: "
            "it would fit on its own, so the inspector's share is what does not fit.*"),
           "*Fix: move large local variables*"]),
    (600, ["*big.c does not compile: big() and pktassert's inspector share BPF's 512-byte stack*",
           "*big() does not fit even on its own*",
           "*Fix: move large local variables*"]),
], ids=["inspector-tips-it", "too-big-alone"])
def test_stack_overflow_fails_only_its_tests(pytester, pktassert_ready, n, expected):
    pytester.path.joinpath("big.c").write_text(BIG_STACK.format(n=n))
    res = run(pytester, '@pytest.mark.xdp("big.c", func="big")\ndef test_big(xdp):\n    pass\n' + OTHER_TEST)
    res.assert_outcomes(failed=1, passed=1)
    res.stdout.fnmatch_lines(expected)


VCOPY = """\
int vcopy(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    char dst[64];
    if (data + 64 > end) return XDP_PASS;
    __u8 n = *(__u8 *)data & 63;
    __builtin_memcpy(dst, data, n);
    return dst[0] == 1 ? XDP_DROP : XDP_PASS;
}
"""


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_runtime_length_memcpy_fails_only_its_tests(pytester, pktassert_ready, xdist):
    pytester.path.joinpath("vcopy.c").write_text(VCOPY)
    res = run(pytester, '@pytest.mark.xdp("vcopy.c", func="vcopy")\ndef test_vcopy(xdp):\n    pass\n'
              + OTHER_TEST, *xdist)
    res.assert_outcomes(failed=1, passed=1)
    # line 7 of the user's file (bcc's rewriting moves clang's own count by one per function)
    res.stdout.fnmatch_lines(["*vcopy.c does not compile:*",
                              "*vcopy.c:7:5: *A call to built-in function 'memcpy' is not supported*",
                              "*hint: *length*known when the program is compiled*"])
    assert "crashed" not in res.stdout.str()


def test_a_bcc_source_compiles_once_per_load(pktassert_ready, monkeypatch):
    """One compile per load, in the child process (crash-safe); none in pytest's own process."""
    import uuid

    from bcc import BPF

    from pktassert.build import compile_check

    children, here = [], []
    start, init = compile_check._start, BPF.__init__
    monkeypatch.setattr(compile_check, "_start", lambda request, *a, **k: children.append(request) or start(request, *a, **k))

    def spy(self, *a, text=None, **k):
        if text and b"pass_all" in text:
            here.append(text)
        init(self, *a, text=text, **k)

    monkeypatch.setattr(BPF, "__init__", spy)
    source = PASS_ALL + f"/* {uuid.uuid4()} */\n"  # a source no earlier run compiled
    loaded = Program(source, func="pass_all").load()
    try:
        assert (len(children), len(here)) == (1, 0)
        assert loaded.fd > 0 and loaded.map_fds() == {}  # loaded, and no map of ours shown as the filter's
    finally:
        loaded.close()


# 2. The verifier's own reason and the user's line, not bcc's E2BIG hint.

LOOP = """\
BPF_ARRAY(counts, __u64, 1);

static int step(__u32 i, __u64 *acc)
{
    return (i * 2654435761u) >> 7;
}

int heavy(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u64 acc = 0;
    if (data + 1 > end)
        return XDP_PASS;
    __u32 n = *(__u8 *)data;
    for (__u32 i = 0; i < 2000000; i++) {
        acc += step(i, &acc) ^ n;
        if (acc == 12345678)
            break;
    }
    return acc & 1 ? XDP_DROP : XDP_PASS;
}
"""
SPIN = """\
int spin(struct xdp_md *ctx)
{
    volatile int stop = 0;
    while (!stop)
        ;
    return XDP_PASS;
}
"""
JUMPS = """\
int many(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u64 acc = 0;
    if (data + 64 > end)
        return XDP_PASS;
    __u8 *p = data;
    for (int i = 0; i < 20000; i++) {
        if (p[i & 63] == 7)
            acc += i;
    }
    return acc & 1 ? XDP_DROP : XDP_PASS;
}
"""
HELPERS_THEN_BAD_READ = """\
static __u32 h1(__u32 x) { return x + 1; }
static __u32 h2(__u32 x) { return x * 3; }
static __u32 h3(__u32 x) { return x ^ 5; }

int reader(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    __u32 k = h1(h2(h3(ctx->ingress_ifindex)));
    return *(unsigned char *)(data + 20 + (k & 1)) ? XDP_DROP : XDP_PASS;
}
"""


@pytest.mark.parametrize("source, func, reason, lines", [
    (LOOP, "heavy", r"BPF program is too large\. Processed 1000001 insn", range(3, 21)),
    (SPIN, "spin", r"infinite loop detected at insn \d+", None),  # EINVAL: bcc loads again without line info
    (JUMPS, "many", r"The sequence of 8193 jumps is too complex", range(9, 13)),
    (HELPERS_THEN_BAD_READ, "reader", r"invalid access to packet", [9]),
], ids=["1M-insns", "infinite-loop", "jumps", "line-after-helpers"])
@pytest.mark.parametrize("as_file", [True, False], ids=["file", "text"])
def test_verifier_rejection_gives_its_reason_and_the_users_line(pktassert_ready, tmp_path, source, func, reason,
                                                                 lines, as_file):
    path = tmp_path / f"{func}.c"
    path.write_text(source)
    with pytest.raises(ProgramError) as e:
        Program(path if as_file else source, func=func).load().close()
    msg = str(e.value)
    assert re.search(rf"the verifier rejected {func}\(\) from .*: {reason}", msg), msg
    assert "Argument list too long" not in msg and "at most 4096 insns" not in msg, msg
    name = str(path) if as_file else "<source text>"
    at = re.search(rf"^at {re.escape(name)}:(\d+): (.*)$", msg, re.MULTILINE)
    if lines is None:   # no line known: none shown, rather than a wrong one
        assert "\nat " not in msg, msg
        return
    assert at, msg
    n = int(at.group(1))
    assert n in lines and at.group(2) == source.splitlines()[n - 1].strip(), msg   # the line as the user wrote it


# 3. Bad inputs to Program: one ProgramError each, naming the cause and the fix.

def refused(match: str, make, *args, **kwargs) -> str:
    with pytest.raises(ProgramError, match=match) as e:
        make(*args, **kwargs)
    assert "Fix:" in str(e.value), str(e.value)
    assert len(str(e.value)) < 1000, str(e.value)
    return str(e.value)


def compose(source, func="f", cflags=()):
    return Program(source, func=func, cflags=cflags).compose()


def test_func_only_in_a_comment():
    src = "// f(struct xdp_md *ctx) { return XDP_DROP; }\nint g(struct xdp_md *ctx) { return XDP_PASS; }\n"
    refused(r"defines no function f\(\)\. Functions it defines: g\. f appears only in a comment", compose, src)


def test_func_that_a_macro_renames():
    src = "#define f other\nint f(struct xdp_md *ctx) { return XDP_PASS; }\n"
    refused(r"func='f' is a macro in <source text> \(line 1: #define f other\).*kernel would run other\(\).*"
            r"Fix: pass func='other'", compose, src)


ENTRY_MACRO = """\
#define ENTRY(name) int name(struct xdp_md *ctx)
ENTRY(my_filter) { return XDP_DROP; }
"""


@pytest.mark.xdp(ENTRY_MACRO, func="my_filter")
def test_func_defined_through_a_macro_is_the_one_run(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP()).verdict == Verdict.DROP


def test_func_a_macro_never_defines(pktassert_ready):
    src = "#define ENTRY(name) int name##_impl(struct xdp_md *ctx)\nENTRY(my_filter) { return XDP_DROP; }\n"
    refused(r"defines no function my_filter\(\) once its macros are expanded", lambda: Program(src, "my_filter").load().close())


@pytest.mark.parametrize("kwargs, match", [
    ({"func": 42}, r"func=42 is an int, not a string"),
    ({"func": "f", "cflags": "-DFOO=1"}, r"cflags='-DFOO=1' is one string.*Fix: cflags=\('-DFOO=1',\)"),
    ({"func": "f", "cflags": tuple("-DFOO=1")}, r"one string split into characters \('-DFOO=1'\)"),
    ({"func": "f", "cflags": 7}, r"cflags=7 is an int"),
    ({"func": "f", "cflags": ("-DA=1", 2)}, r"cflags item 1 \(2\) is an int, not a string"),
    ({"func": "f", "cflags": ("-DPKTASSERT_FILTER=g",)}, r"-DPKTASSERT_FILTER=g.*reserved"),
    ({"func": "f", "cflags": ("-D", "pktassert_x")}, r"pktassert_x.*reserved"),
    ({"func": "f", "source": b"int f"}, r"source=b'int f' is bytes"),
])
def test_bad_arguments(kwargs, match):
    refused(match, Program, **{"source": PASS_ALL, **kwargs})


def test_ring_pages_may_be_set():
    assert Program(PASS_ALL, func="pass_all", cflags=["-DPKTASSERT_RING_PAGES=64"]).cflags == (
        "-DPKTASSERT_RING_PAGES=64",)


def test_latin1_source_names_the_byte(tmp_path):
    path = tmp_path / "latin1.c"
    path.write_bytes(b"/* caf\xe9 */\nint f(struct xdp_md *ctx) { return XDP_PASS; }\n")
    refused(r"latin1\.c is not UTF-8: byte 0xe9 at offset 6 \(line 1, column 7\).*Fix: .*iconv", compose, path)


def test_nul_byte_in_source():
    refused(r"a NUL byte at offset 5 \(line 3, column 1\)", compose, "int\n\n\x00 f(struct xdp_md *c) {}")


def test_bom_is_dropped(tmp_path, pktassert_ready):
    path = tmp_path / "bom.c"
    path.write_bytes(b"\xef\xbb\xbf" + PASS_ALL.encode() + b"\n")
    assert "\ufeff" not in compose(path, "pass_all")
    Program(path, "pass_all").load().close()


def test_bad_marker_arguments_fail_the_test_with_the_cause(pktassert_ready, pytester):
    res = run(pytester, f"""
@pytest.mark.xdp({PASS_ALL!r}, func="pass_all", cflags="-DFOO=1")
def test_string_cflags(xdp):
    pass

@pytest.mark.xdp({PASS_ALL!r}, func=42)
def test_int_func(xdp):
    pass
""")
    res.assert_outcomes(failed=2)
    res.stdout.fnmatch_lines_random(["*pktassert: cflags='-DFOO=1' is one string*Fix: cflags=('-DFOO=1',)*",
                                     "*pktassert: func=42 is an int, not a string*"])
    assert len(res.stdout.str()) < 10_000   # no clang dump


def test_failures_leave_nothing_behind(pytester, pktassert_ready, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))   # the inner run's own temp dir: /tmp is shared with others
    pytester.path.joinpath("vcopy.c").write_text(VCOPY)
    pytester.path.joinpath("loop.c").write_text(LOOP)
    res = run(pytester, """
import os, tempfile
from pktassert import ProgramError

def test_it():
    def state():
        return sorted(os.listdir("/proc/self/fd")), sorted(os.listdir(tempfile.gettempdir()))
    from pktassert.machine import reaper
    reaper.register("/nonexistent")  # the process's reaper (its pidfd and socket, once per process) is no leftover
    reaper.release("/nonexistent")
    before = state()
    for _ in range(2):
        for src, func in (("vcopy.c", "vcopy"), ("loop.c", "heavy")):
            with pytest.raises(ProgramError):
                Program(os.path.abspath(src), func).load()
    assert state() == before
""")
    res.assert_outcomes(passed=1)



def test_a_tc_filter_the_verifier_rejects_is_explained_as_tc(pktassert_ready):
    # The verifier's log is fetched again as the hook's own program type: as XDP it would say something else.
    source = (LOOP.replace("struct xdp_md *ctx", "struct __sk_buff *ctx").replace("XDP_PASS", "TC_ACT_OK")
              .replace("XDP_DROP", "TC_ACT_SHOT"))
    with pytest.raises(ProgramError) as e:
        Program(source, func="heavy", hook="tc").load().close()
    assert re.search(r"the verifier rejected heavy\(\) from .*: BPF program is too large\. Processed 1000001 insn",
                     str(e.value)), str(e.value)
