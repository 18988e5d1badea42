"""``pktassert-cleanup``: free what a crashed run left (like mininet's ``mn -c``).

Only namespaces whose veth carries our owner mark, and whose owner process is dead, are
touched; another run's live namespaces are listed and left alone. So are tracefs instances of
ours: those no process reads (a killed run's) are removed, a live run's are listed.
"""

from __future__ import annotations

import argparse
import os
import sys

from pktassert.netns import leftovers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pktassert-cleanup", description=__doc__)
    ap.add_argument("--dry-run", action="store_true", help="list what would be freed, free nothing")
    ap.add_argument("--owner", type=int, metavar="PID", help="only the namespaces the run with this (dead) pid left "
                                                              "(tracefs instances, which name no run, are left out)")
    ap.add_argument("--cache", action="store_true", help="also empty the build cache of compiled and linked libbpf "
                                                          "filters ($PKTASSERT_CACHE_DIR or ~/.cache/pktassert/build)")
    args = ap.parse_args(argv)
    if args.cache:
        from pktassert.build import build_cache  # noqa: PLC0415 - the CLI imports what the chosen cleanup needs

        where = build_cache.directory()
        if args.dry_run:
            print(f"would empty the build cache {where}")
        else:
            print(f"emptied the build cache {where}: {build_cache.clear(where)} files")
    if os.geteuid() != 0:  # namespaces and tracefs are root's to open: say so rather than fail
        _build_temporaries(args.dry_run)
        print("namespaces and tracefs instances: not checked (that needs root: sudo pktassert-cleanup)")
        return 0
    # Instances and build temporaries name no run: --owner (one run's leftovers) leaves them out.
    instances = 0 if args.owner is not None else _tracefs_instances(args.dry_run) + _build_temporaries(args.dry_run)
    found = [lo for lo in leftovers.find() if args.owner in (None, lo.owner_pid)]
    for lo in found:
        print(("in use: " if lo.owner_alive else "orphan: ") + lo.describe())
    if not found and not instances:
        print("nothing of pktassert's is left")
    if args.dry_run or not found:
        return 0
    freed, stuck = leftovers.clean(owner_pid=args.owner)
    for lo in freed:
        print(f"freed: net:[{lo.inode}] (killed {len(lo.inside)} process(es) inside)")
    # An orphan listed above that another run (its session start frees orphans) freed before this one could.
    accounted = {lo.inode for lo in freed + stuck}
    for lo in found:
        if not lo.owner_alive and lo.inode not in accounted:
            print(f"gone: net:[{lo.inode}] (freed meanwhile by another run)")
    for lo in stuck:
        print(f"not freed: {lo.describe()}. Fix: end the fd holders listed.", file=sys.stderr)
    return 1 if stuck else 0


def _build_temporaries(dry_run: bool) -> int:
    """Remove what killed builds left in the build cache and private caches (a live writer's stay)."""
    from pktassert.build import cache_upkeep  # noqa: PLC0415 - a cleanup of namespaces alone needs no BPF tooling (not at the top: a cleanup of namespaces alone needs no BPF tooling)

    if dry_run:
        return 0
    gone = cache_upkeep.leftovers()
    for path in gone:
        print(f"freed: {path} (a killed build's temporary)")
    return len(gone)


def _tracefs_instances(dry_run: bool) -> int:
    """List the tracefs instances of pktassert's (for bpf_printk lines) and free those no process
    reads, which only a killed run leaves (a live run's cannot be removed: EBUSY). Returns how many
    there were."""
    from pktassert.errors import HostLacks  # noqa: PLC0415 - the CLI imports what the chosen cleanup needs
    from pktassert.kernel import tracefs  # noqa: PLC0415 - the CLI imports what the chosen cleanup needs
    from pktassert.observers import printk  # noqa: PLC0415 - the CLI imports what the chosen cleanup needs

    try:
        found = printk.instances()
    except (HostLacks, OSError):
        return 0  # no tracefs here: nothing of ours can be in it
    for name, readers in sorted(found.items()):
        if readers:
            print(f"in use: the tracefs instance {name}: its trace_pipe is open in pid {', '.join(map(str, readers))}")
        else:
            print(f"orphan: the tracefs instance {name}: no process here reads it (a killed run's); it records every "
                  f"bpf_printk on this host into {printk.BUFFER_KB // 1024} MB per CPU")
    if not dry_run:
        gone = printk.clean_leftovers()
        for name in gone:
            print(f"freed: the tracefs instance {name}")
        left = {p.name for p in (tracefs.root() / "instances").glob(printk.PREFIX + "*")}
        for name in sorted(n for n, readers in found.items() if not readers and n in left):
            print(f"in use: the tracefs instance {name}: the kernel keeps it (EBUSY): a run in a PID namespace "
                  f"this one cannot see reads it")
    return len(found)


if __name__ == "__main__":
    sys.exit(main())
