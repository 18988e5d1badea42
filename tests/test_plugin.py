"""Plugin behaviour seen from a user's run: markers, overrides, failure messages, skips, errors."""

import shutil
import sys

import pytest

PASS_ALL = 'int pass_all(struct xdp_md *ctx) { return XDP_PASS; }'
HEADER = "import pytest\nfrom scapy.layers.inet import IP, TCP\nfrom pktassert import Verdict, Program\n"
NEEDS_XDP = HEADER + f"@pytest.mark.xdp({PASS_ALL!r}, func='pass_all')\ndef test_it(xdp):\n    pass\n"


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=HEADER + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_marker_with_file_relative_to_test(pktassert_ready, pytester):
    pytester.path.joinpath("f.c").write_text(PASS_ALL)
    res = run(pytester, """
@pytest.mark.xdp("f.c", func="pass_all")
def test_it(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP()).verdict == Verdict.PASS
""")
    res.assert_outcomes(passed=1)


def test_fixture_override_in_conftest(pktassert_ready, pytester):
    pytester.makeconftest(f"""
import pytest
from pktassert import Program
@pytest.fixture
def xdp_program():
    return Program({PASS_ALL!r}, func="pass_all")
""")
    res = run(pytester, "def test_it(xdp, inject):\n    assert inject(IP(dst=xdp.ip) / TCP()).verdict == Verdict.PASS\n")
    res.assert_outcomes(passed=1)


def test_no_filter_chosen_says_how(pktassert_ready, pytester):
    res = run(pytester, "def test_it(xdp):\n    pass\n")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*no filter chosen for this test. Fix: mark it @pytest.mark.xdp*"])


@pytest.mark.parametrize("source, func, expected", [
    ("int f(struct xdp_md *ctx) {\\n  return XDP_PASS\\n}\\n", "f", "*<source text>:2:18: error: expected ';'*"),
    ("int f(struct xdp_md *ctx) {\\n  void *d = (void *)(long)ctx->data;\\n"
     "  return *(unsigned char *)(d + 20) ? XDP_DROP : XDP_PASS;\\n}\\n", "f",
     "*the verifier rejected f() from <source text>: invalid access to packet*"),
    ("int g(struct xdp_md *ctx) { return XDP_PASS; }", "f", "*defines no function f(). Functions it defines: g.*"),
    ("int f(struct __sk_buff *skb) { return 0; }", "f",
     "*it is a tc classifier, not an XDP program. Fix: put it under @pytest.mark.tc*"),
    ("missing.c", "f", "*@pytest.mark.xdp: no file 'missing.c'*"),
], ids=["syntax", "verifier", "no-entry", "wrong-type", "no-file"])
def test_bad_filter_fails_the_test_with_its_cause(pktassert_ready, pytester, source, func, expected):
    res = run(pytester, f"""
@pytest.mark.xdp("{source}", func="{func}")
def test_it(xdp, inject):
    inject(IP(dst=xdp.ip) / TCP())
""")
    res.assert_outcomes(failed=1)  # a failure of the test, not an error of a fixture
    res.stdout.fnmatch_lines([expected])


def test_count_failure_shows_counts_and_first_offender(pktassert_ready, pytester):
    res = run(pytester, f"""
@pytest.mark.xdp({PASS_ALL!r}, func="pass_all")
def test_it(xdp, inject):
    r = inject(IP(src="198.51.100.9", dst=xdp.ip) / TCP(dport=80, flags="S"), count=20, vary={{"sport": (50000, 50019)}})
    assert r.count(Verdict.DROP) >= 15
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([
        "*expected count(DROP) >= 15, got 0",
        "*verdicts of these 20 packets: PASS=20",
        "*first packet that was not DROP: packet #0: Ether / IP / TCP 198.51.100.9:50000 > 192.0.2.1:http S -> PASS",
    ])


def test_verdict_failure_names_the_packet(pktassert_ready, pytester):
    res = run(pytester, f"""
@pytest.mark.xdp({PASS_ALL!r}, func="pass_all")
def test_it(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=23, flags="S")).verdict == Verdict.DROP
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*expected verdict DROP, got PASS",
                              "*for packet #0: Ether / IP / TCP 192.0.2.2:ftp_data > 192.0.2.1:telnet S"])


def test_not_a_packet_is_one_clear_error(pktassert_ready, pytester):
    res = run(pytester, f"""
from pktassert import InjectError
@pytest.mark.xdp({PASS_ALL!r}, func="pass_all")
def test_it(xdp, inject):
    with pytest.raises(InjectError, match="item 0 is a str .'hello'., not a packet"):
        inject("hello")
    with pytest.raises(InjectError, match="shorter than an Ethernet header"):
        inject(b"abc")
    with pytest.raises(InjectError, match="1515-byte frame; the DUT link's MTU is 1500"):
        inject(IP(dst=xdp.ip) / TCP() / (b"x" * 1461))
    assert inject(IP(dst=xdp.ip) / TCP() / (b"x" * 1460)).verdict == Verdict.PASS
""")
    res.assert_outcomes(passed=1)


def _unprivileged() -> list[str]:
    # A real run without capabilities: uid 0 is kept (so files stay readable) but every
    # capability is dropped from the bounding set before exec.
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", sys.executable, "-m", "pytest",
            "-p", "no:cacheprovider"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_unprivileged_run_skips_naming_the_missing_capabilities(pytester):
    pytester.makepyfile(test_user=NEEDS_XDP)
    res = pytester.run(*_unprivileged(), "-rs", "test_user.py")
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*SKIPPED*not privileged: missing CAP_NET_ADMIN, CAP_SYS_ADMIN*Fix: run pytest as root*",
                              "*1 skipped*"])
    res = pytester.run(*_unprivileged(), "--pktassert-require", "test_user.py")
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*not privileged*(--pktassert-require is set)*", "*1 error*"])


def test_missing_bcc_skips_with_the_fix(pytester, monkeypatch):
    # Mocked: bcc is installed here, so a stand-in package that fails to import shadows it.
    shadow = pytester.mkdir("shadow")
    shadow.joinpath("bcc").mkdir()
    shadow.joinpath("bcc", "__init__.py").write_text("raise ImportError('stand-in: no bcc')\n")
    pytester.makepyfile(test_user=NEEDS_XDP)
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    res = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "test_user.py")
    res.stdout.fnmatch_lines(["*bcc is not importable*Fix: apt-get install python3-bpfcc*", "*1 skipped*"])


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_missing_kernel_headers_skip_with_the_exact_fix(pktassert_ready, pytester):
    # Real: a private mount namespace hides /lib/modules from the inner run only.
    pytester.makepyfile(test_user=NEEDS_XDP)
    inner = f"mount -t tmpfs none /lib/modules && exec {sys.executable} -m pytest -p no:cacheprovider -rs test_user.py"
    res = pytester.run("unshare", "--mount", "--propagation", "private", "sh", "-c", inner)
    res.stdout.fnmatch_lines(["*bcc needs kernel headers and finds none for kernel*Fix: *ln -sfn*make setup*",
                              "*1 skipped*"])
