"""What pktassert needs from the host: its own tracefs, probes that name what is missing and the fix."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from pktassert.errors import HostLacks, ProgramError
from pktassert.kernel import tracefs
from pktassert.machine import host
from pktassert.machine.host import KernelFeature
from pktassert.observers import printk

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: mounting tracefs, the kernel's BTF, namespaces")


def _mounts() -> list[str]:
    """This mount namespace's mounts, as the host sees them (ids change with every mount)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(f.read().splitlines())


@needs_root
def test_tracefs_of_our_own_is_in_no_mount_table(pktassert_ready):
    before = _mounts()
    pipe = printk.TracePipe()
    try:
        assert (tracefs.root() / "instances" / pipe.dir.name / "trace_pipe").exists()
        assert _mounts() == before  # nothing mounted where anyone can see it, /sys/kernel/tracing included
    finally:
        pipe.close()
    assert not pipe.dir.exists()


@needs_root
def test_a_killed_run_leaves_no_mount_and_no_instance(pktassert_ready):
    before = _mounts()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from pktassert.observers.printk import TracePipe; "
                              "from pktassert.machine import reaper; p = TracePipe(); print(p.dir.name, reaper.pid(), "
                              "flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        name, reaper = child.stdout.readline().split() if child.stdout else ("", "")
        watch = os.pidfd_open(int(reaper))
        assert name.startswith(printk.PREFIX)
        instance = tracefs.root() / "instances" / name
        assert name not in printk.clean_leftovers() and instance.exists()  # a live run's: the kernel says EBUSY
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _mounts() == before  # its mount went with its fds
    # its reaper removes the instance once the kernel has closed the child's files, then exits
    assert select.select([watch], [], [], 30)[0], "the reaper did not finish"
    os.close(watch)
    assert not instance.exists()


@needs_root
def test_every_kernel_feature_we_use_is_found_on_this_kernel():
    assert {name: host.problem(name) for name in host.KERNEL_FEATURES} == dict.fromkeys(host.KERNEL_FEATURES)


@needs_root
def test_a_missing_kernel_feature_names_itself_and_the_release_that_has_it():
    lacking = KernelFeature("the kfunc bpf_no_such_thing", "9.1", "func", ("bpf_no_such_thing",), "the fate tracker")
    said = lacking.problem()
    assert said == (f"the fate tracker needs the kfunc bpf_no_such_thing, which this kernel ({os.uname().release}) "
                    f"lacks: Linux 9.1 and later have it. Fix: run on a 9.1 or later kernel.")


@needs_root
def test_a_feature_of_several_names_says_which_are_missing():
    tracepoints = KernelFeature("the tracepoints", "6.1", "typedef", ("btf_trace_kfree_skb", "btf_trace_no_such_tp"), "x")
    said = tracepoints.problem()
    assert said is not None and said.startswith("x needs the tracepoints (btf_trace_no_such_tp), which this kernel")


@needs_root
def test_without_its_kfunc_the_fate_tracker_sees_deliveries_by_kprobe_or_says_why_not(monkeypatch):
    # Mocked: this kernel (6.18) has the kfunc; 6.1 (Debian 12's own) does not, and there the tracker uses a
    # kprobe (tests/test_kernel_matrix.py runs the dut tests on a real 6.1). This kernel has no kprobes:
    # then the refusal names both ways and the fix.
    from pktassert.instruments.fate_tracker import FateTracker

    monkeypatch.setitem(host.KERNEL_FEATURES, "cast-to-kern-ctx",
                        KernelFeature("the kfunc bpf_cast_to_kern_ctx", "6.2", "func", ("bpf_cast_to_kern_ctx_not_here",),
                                      "the fate tracker (dut fixture, rule sets)"))
    host.problem.cache_clear()
    try:
        if os.path.exists("/sys/bus/event_source/devices/kprobe"):
            tracker = FateTracker()
            try:
                assert tracker.delivery == "kprobe" and tracker.socket_fd >= 0
            finally:
                tracker.close()
        else:
            with pytest.raises(ProgramError, match=r"bpf_cast_to_kern_ctx \(Linux 6\.2 and later\) or, on older "
                                                   r"kernels, a kprobe.*Fix: a 6\.2 or later kernel, or one built "
                                                   r"with CONFIG_KPROBES"):
                FateTracker()
    finally:
        host.problem.cache_clear()


def test_each_need_has_a_probe_or_says_pktassert_provides_it():
    for need in host.NEEDS.values():
        assert need.probe is not None or need.when_missing.startswith("provided"), need.name


def test_a_missing_tool_is_named_with_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    probe = host.NEEDS["bpftool"].probe
    assert probe is not None and probe() == ("bpftool is not installed: it writes vmlinux.h for CO-RE from the kernel's "
                                             "BTF. Fix: apt-get install bpftool (make setup does).")


# IPv6 disabled at boot (ipv6.disable=1) cannot be had here without rebooting: mocked by the probe.

@needs_root
def test_without_ipv6_the_topology_is_ipv4_only(monkeypatch, pktassert_ready):
    from pktassert.netns import Topology, topology

    monkeypatch.setattr(topology, "ipv6_enabled", lambda: False)
    with Topology() as topo:
        addresses = {a.get_attr("IFA_ADDRESS") for a in topo.dut.ns.ipr.get_addr(index=topo.dut.ifindex)}
        # (the link-local address is the kernel's own, which here has IPv6: only the mock says it has not)
        assert {a for a in addresses if not a.startswith("fe80:")} == {topo.dut.ip}


@pytest.mark.nftables("table inet t { chain c { type filter hook input priority 0; policy accept; }; }")
def test_without_ipv6_ipv6_fates_are_the_hosts_lack(dut, inject, monkeypatch):
    said = "IPv6 is disabled in this kernel (mocked)"
    monkeypatch.setattr(host, "problem", lambda name: said if name == "IPv6" else None)
    assert inject(IP(dst=dut.ip) / UDP(dport=53))[0].fate is not None  # IPv4 unchanged
    with pytest.raises(HostLacks, match=r"IPv6 is disabled in this kernel \(mocked\)"):
        inject(IPv6(dst=dut.ip6) / UDP(dport=53))


class _Program:
    """Stands for a filter (pure logic: which programs the cache closes, nothing is loaded)."""

    kind = "bcc source"

    def __init__(self, name: str) -> None:
        self.name = name

    def cache_key(self) -> tuple:
        return (self.name,)

    def load(self) -> _Loaded:
        return _Loaded(self.name)


class _Loaded:
    resettable = True

    def __init__(self, name: str) -> None:
        self.name = name


def test_a_low_fd_limit_closes_only_programs_no_test_is_using(monkeypatch):
    from pktassert.device import program_cache

    closed: list[str] = []
    monkeypatch.setattr(program_cache, "Collector", lambda loaded: None)
    monkeypatch.setattr(program_cache.ProgramCache, "_close", lambda self, hit: closed.append(hit[0].name))
    monkeypatch.setattr(program_cache, "FD_SHARE", 0)  # always short of fds: close whatever may be closed
    cache = program_cache.ProgramCache()
    front, behind = _Program("xdp in front"), _Program("tc behind")
    cache.get(front)
    cache.get(behind)  # the same test: the XDP filter in front is still in use
    assert closed == []
    cache.release(front)
    cache.release(behind)
    cache.get(_Program("next test's"))
    assert closed == ["xdp in front", "tc behind"]
