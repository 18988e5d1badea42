"""What pktassert needs from the host, as a table: each need, what uses it, and how it is probed.

A need pktassert can provide for itself (tracefs, a build cache) is provided without changing the
host; the others are probed where they are first needed and, when missing, raise ``HostLacks``:
the plugin turns it into a skip naming the need and the fix (a failure under --pktassert-require),
never a traceback. The README's "What pktassert needs from the host" is this table."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable

from pktassert.errors import HostLacks
from pktassert.kernel import btf_types
from pktassert.kernel.btf_types import BTF
from pktassert.netns.topology import ipv6_enabled

__all__ = ["BTF", "HostLacks", "check", "problem"]



@dataclasses.dataclass(frozen=True)
class KernelFeature:
    """A kernel feature, found by a name in the running kernel's BTF."""

    name: str      # as users search for it
    since: str     # the first Linux release that has it
    btf_kind: str  # "func", "struct", "enum", "typedef": what the kernel's BTF holds once it has the feature
    btf_names: tuple[str, ...]  # all of them
    used_by: str

    def problem(self) -> str | None:
        kind = {"func": btf_types.FUNC, "struct": btf_types.STRUCT, "enum": btf_types.ENUM,
                "typedef": btf_types.TYPEDEF}[self.btf_kind]
        missing = [n for n in self.btf_names if btf_types.kernel().find(n, kind) <= 0]
        if not missing:
            return None
        what = self.name + (f" ({', '.join(missing)})" if len(self.btf_names) > 1 else "")
        return (f"{self.used_by} needs {what}, which this kernel ({os.uname().release}) lacks: Linux {self.since} "
                f"and later have it. Fix: run on a {self.since} or later kernel.")


# What our own programs rely on, beyond BPF, XDP and tc themselves.
TRACKER = "the fate tracker (dut fixture, rule sets)"
KERNEL_FEATURES = {
    "xdp-live-frames": KernelFeature("BPF_F_TEST_XDP_LIVE_FRAMES (test runs that send frames)", "5.18", "struct",
                                     ("xdp_page_head",), "the traffic engine (live tier)"),
    "drop-reasons": KernelFeature("enum skb_drop_reason", "5.17", "enum", ("skb_drop_reason",), TRACKER),
    # bpf/fates.bpf.c's tp_btf programs; all in Debian 12's 6.1 (checked in its BTF), the oldest kernel we try
    "tracepoints": KernelFeature("the tracepoints it attaches to", "6.1", "typedef",
                                 tuple(f"btf_trace_{tp}" for tp in ("netif_receive_skb", "kfree_skb", "consume_skb",
                                                                    "tcp_send_reset", "icmp_send")), TRACKER),
    "cast-to-kern-ctx": KernelFeature("the kfunc bpf_cast_to_kern_ctx", "6.2", "func", ("bpf_cast_to_kern_ctx",), TRACKER),
}


def _tool(name: str, package: str, used_by: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        if shutil.which(name):
            return None
        return f"{name} is not installed: {used_by}. Fix: apt-get install {package} (make setup does)."
    return probe


def _header(name: str, package: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        if os.path.exists(f"/usr/include/{name}"):
            return None
        return f"<{name}> is not installed: libbpf programs include it. Fix: apt-get install {package} (make setup does)."
    return probe


def _ipv6() -> str | None:
    if ipv6_enabled():
        return None
    return ("IPv6 is disabled in this kernel (booted with ipv6.disable=1, or built without CONFIG_IPV6): the DUT's "
            "stack cannot take IPv6 packets. Fix: boot without ipv6.disable=1.")


@dataclasses.dataclass(frozen=True)
class Need:
    name: str
    used_by: str
    when_missing: str
    probe: Callable[[], str | None] | None = None  # None: provided by pktassert, or only said


# The order of the README's table.
NEEDS = {n.name: n for n in (
    Need("kernel BTF", "libbpf sources and objects, the dut fixture, rule sets, drop reason names",
         "those tests skip", btf_types.missing),
    Need("clang", "libbpf sources, objects (joined to our inspector), the dut fixture", "those tests skip",
         _tool("clang", "clang libbpf-dev", "libbpf sources are compiled, and objects joined to pktassert's "
                                            "inspector, with it")),
    Need("libbpf-dev", "libbpf sources, our own libbpf programs (<bpf/bpf_helpers.h>)", "those tests skip",
         _header("bpf/bpf_helpers.h", "libbpf-dev")),
    Need("bpftool", "libbpf sources (vmlinux.h for CO-RE)", "those tests skip",
         _tool("bpftool", "bpftool", "it writes vmlinux.h for CO-RE from the kernel's BTF")),
    Need("IPv6", "IPv6 packets through the DUT's stack (live tier)", "the topology is IPv4-only; a test that sends "
         "IPv6 through the stack skips", _ipv6),
    Need("tracefs", "filters that call bpf_printk", "provided: a detached mount of pktassert's own"),
)}


@functools.cache
def problem(name: str) -> str | None:
    """Why the host lacks ``name`` (a NEEDS or KERNEL_FEATURES key), or None; probed once per process."""
    if name in KERNEL_FEATURES:
        # Without the kernel's BTF a feature cannot be looked up: a program that uses it then fails to load,
        # saying so; users of BTF check for it first.
        return None if problem("kernel BTF") else KERNEL_FEATURES[name].problem()
    probe = NEEDS[name].probe
    return probe() if probe else None


def check(*names: str) -> None:
    """Raises HostLacks for the first of ``names`` the host lacks."""
    for name in names:
        found = problem(name)
        if found:
            raise HostLacks(name, found)
