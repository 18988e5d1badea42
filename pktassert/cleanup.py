"""``pktassert-cleanup``: free namespaces a crashed run left alive (like mininet's ``mn -c``).

Only namespaces whose veth carries our owner mark, and whose owner process is dead, are
touched; another run's live namespaces are listed and left alone.
"""

from __future__ import annotations

import argparse
import sys

from pktassert.netns import leftovers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pktassert-cleanup", description=__doc__)
    ap.add_argument("--dry-run", action="store_true", help="list what would be freed, free nothing")
    ap.add_argument("--owner", type=int, metavar="PID", help="only what the run with this (dead) pid left")
    ap.add_argument("--cache", action="store_true", help="also empty the build cache of compiled and linked libbpf "
                                                          "filters ($PKTASSERT_CACHE_DIR or ~/.cache/pktassert/build)")
    args = ap.parse_args(argv)
    if args.cache:
        from pktassert.bpf import build_cache

        where = build_cache.directory()
        if args.dry_run:
            print(f"would empty the build cache {where}")
        else:
            print(f"emptied the build cache {where}: {build_cache.clear(where)} files")
    _tracefs_instances(args.dry_run)
    found = [lo for lo in leftovers.find() if args.owner in (None, lo.owner_pid)]
    for lo in found:
        print(("in use: " if lo.owner_alive else "orphan: ") + lo.describe())
    if not found:
        print("nothing of pktassert's is left")
    if args.dry_run or not found:
        return 0
    freed, stuck = leftovers.clean(owner_pid=args.owner)
    for lo in freed:
        print(f"freed: net:[{lo.inode}] (killed {len(lo.inside)} process(es) inside)")
    for lo in stuck:
        print(f"not freed: {lo.describe()}. Fix: end the fd holders listed.", file=sys.stderr)
    return 1 if stuck else 0


def _tracefs_instances(dry_run: bool) -> None:
    """Instances for bpf_printk lines that killed runs left (a live run's cannot be removed: EBUSY)."""
    from pktassert import printk
    from pktassert.host import HostLacks

    if dry_run:
        return
    try:
        for name in printk.clean_leftovers():
            print(f"freed: the tracefs instance {name} of a killed run")
    except HostLacks:
        pass  # no tracefs here: nothing of ours can be in it


if __name__ == "__main__":
    sys.exit(main())
