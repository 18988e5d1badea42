"""The kernel's conntrack statistics of a namespace (/proc/net/stat/nf_conntrack), summed over CPUs:
the oracle for what conntrack itself dropped (``drop``, ``insert_failed`` when it cannot confirm an entry)."""

from __future__ import annotations

from pktassert.netns import Namespace


def conntrack_stats(ns: Namespace) -> dict[str, int]:
    """Counter name -> value for ``ns``; empty without conntrack (the module not loaded)."""
    try:
        with ns.entered(), open("/proc/thread-self/net/stat/nf_conntrack") as f:  # per namespace, per thread
            names, *cpus = (line.split() for line in f)
    except (FileNotFoundError, ValueError):
        return {}
    return {name: sum(int(cpu[i], 16) for cpu in cpus) for i, name in enumerate(names) if name != "entries"}


def rose(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that rose between two readings, by how much."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
