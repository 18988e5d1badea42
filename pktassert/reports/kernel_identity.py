"""Which kernel a run's results came from: its release, the digest of its BTF (two builds of one
release differ there), and the kernel features pktassert probed, present or missing. Named in the
terminal summary, as JUnit properties of the run and in each pcapng's section header, so a result
read later (a CI artifact, a merged shard report) says where it was measured."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from pktassert.build import build_cache
from pktassert.machine import host


@dataclasses.dataclass(frozen=True)
class KernelIdentity:
    release: str
    btf: str                      # the first 16 hex digits of the BTF's SHA-256, or "none"
    features: tuple[str, ...]     # probed and present
    missing: tuple[str, ...]      # probed and absent

    def line(self) -> str:
        """``Linux 6.18.0 (BTF 1a2b..., features: a, b; missing: c)``."""
        said = f"features: {', '.join(self.features) or 'none'}"
        if self.missing:
            said += f"; missing: {', '.join(self.missing)}"
        return f"Linux {self.release} (BTF {self.btf}, {said})"

    def properties(self) -> dict[str, str]:
        """As name -> value for JUnit's run properties: JSON, as pktassert's other properties are."""
        return {"pktassert_kernel": json.dumps(dataclasses.asdict(self))}


@functools.cache
def identity() -> KernelIdentity:
    """This machine's kernel, probed once per process."""
    try:
        btf = build_cache.kernel_btf_id()[:16]
    except (host.HostLacks, OSError):
        btf = "none"
    if btf == "none":  # the features are looked up by name in the BTF: none can be said present
        return KernelIdentity(os.uname().release, btf, (), tuple(host.KERNEL_FEATURES))
    present: list[str] = []
    missing: list[str] = []
    for name in host.KERNEL_FEATURES:
        try:
            (missing if host.problem(name) else present).append(name)
        except host.HostLacks:  # the BTF is there but libbpf cannot read it
            missing.append(name)
    return KernelIdentity(os.uname().release, btf, tuple(present), tuple(missing))


MARKERS = ("xdp", "tc", "nftables")


class KernelReport:
    """The pytest side: the kernel as JUnit properties of the run, and a line in the terminal summary
    of a run where a test of pktassert's ran (a filter or rule set marker, or a property of ours)."""

    def __init__(self) -> None:
        self.ours = False

    def pytest_runtest_logreport(self, report: object) -> None:
        if getattr(report, "pktassert_kernel", None):  # from a VM (--pktassert-kernel): its kernel is named there
            return
        props = [k for k, _ in getattr(report, "user_properties", ())]
        keywords = getattr(report, "keywords", {})
        self.ours = self.ours or any(k.startswith("pktassert") for k in props) or any(m in keywords for m in MARKERS)

    def pytest_sessionstart(self, session: object) -> None:
        from _pytest.junitxml import xml_key  # noqa: PLC0415 - pytest's own JUnit writer, where --junitxml made one

        config = session.config  # type: ignore[attr-defined]
        xml = config.stash.get(xml_key, None)
        if xml is not None and not hasattr(config, "workerinput"):
            for name, value in identity().properties().items():
                xml.add_global_property(name, value)

    def pytest_terminal_summary(self, terminalreporter: object) -> None:
        if self.ours:
            terminalreporter.write_line(f"pktassert: results from {identity().line()}")  # type: ignore[attr-defined]
