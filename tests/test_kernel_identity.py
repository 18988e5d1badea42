"""Every report names its kernel (issue 25): the terminal summary, the JUnit run properties and each
pcapng's section header carry the kernel release, its BTF digest and the features pktassert probed."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET

from pktassert.machine import host
from pktassert.reports.kernel_identity import KernelIdentity, identity

FAILING = """
import pytest
from scapy.layers.inet import IP, TCP
from pktassert import Verdict

@pytest.mark.xdp("int drops(struct xdp_md *ctx) { return XDP_DROP; }", func="drops")
def test_fails_and_keeps_evidence(xdp, inject):
    assert inject(IP(dst=xdp.ip) / TCP(dport=80)).verdict == Verdict.PASS
"""


def test_the_line_names_release_btf_and_features():
    k = KernelIdentity("6.1.0-9-amd64", "0123456789abcdef", ("xdp-live-frames", "drop-reasons"), ("cast-to-kern-ctx",))
    assert k.line() == ("Linux 6.1.0-9-amd64 (BTF 0123456789abcdef, features: xdp-live-frames, drop-reasons; "
                        "missing: cast-to-kern-ctx)")
    assert json.loads(k.properties()["pktassert_kernel"]) == {
        "release": "6.1.0-9-amd64", "btf": "0123456789abcdef", "features": ["xdp-live-frames", "drop-reasons"],
        "missing": ["cast-to-kern-ctx"]}


def test_this_kernel_is_probed_for_every_feature():
    k = identity()
    assert k.release == os.uname().release
    assert sorted((*k.features, *k.missing)) == sorted(host.KERNEL_FEATURES)
    assert len(k.btf) == 16 or (k.btf == "none" and not os.path.exists(host.BTF))


def test_summary_junit_and_pcapng_name_the_kernel(pytester, pktassert_ready):
    pytester.makepyfile(test_one=FAILING)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=j.xml")
    res.assert_outcomes(failed=1)
    k = identity()
    res.stdout.fnmatch_lines([f"pktassert: results from Linux {k.release} (BTF {k.btf}, features: *"])
    props = {p.get("name"): json.loads(p.get("value")) for p in ET.parse(pytester.path / "j.xml").iter("property")}
    assert props["pktassert_kernel"] == {"release": k.release, "btf": k.btf, "features": list(k.features),
                                         "missing": list(k.missing)}
    pcaps = list(pytester.path.rglob("*.pcapng"))
    assert len(pcaps) == 1, pcaps
    info = subprocess.run(["capinfos", str(pcaps[0])], capture_output=True, text=True, check=True).stdout
    assert f"Capture oper-sys:    Linux {k.release}" in info, info
    assert "Capture application: pktassert" in info and f"BTF {k.btf}" in info, info
    assert subprocess.run(["tshark", "-r", str(pcaps[0]), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, check=True).stdout.split() == ["1"]


def test_a_run_of_no_pktassert_test_says_nothing_of_kernels(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    assert "pktassert: results from" not in res.stdout.str()


def test_without_the_kernels_btf_no_feature_is_said_present(monkeypatch):
    """Features are looked up by name in the BTF: without it none can be called present (host.problem()
    answers None for them then, leaving the failure to the program that needs them)."""
    from pktassert.build import build_cache

    def lacks() -> str:
        raise host.HostLacks("kernel BTF", "no /sys/kernel/btf/vmlinux")

    monkeypatch.setattr(build_cache, "kernel_btf_id", lacks)
    identity.cache_clear()
    try:
        k = identity()
        assert (k.btf, k.features, k.missing) == ("none", (), tuple(host.KERNEL_FEATURES))
    finally:
        identity.cache_clear()
