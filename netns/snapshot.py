"""What the root network namespace looks like, to prove a run left it as it was.

Links (and any XDP program on them), addresses, routes, permanent neighbour entries, named namespaces,
the net.* sysctls and the nftables ruleset. Read from the calling thread's namespace.
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute, netns

NUD_PERMANENT = 0x80  # linux/neighbour.h
# Counters the kernel changes by itself, not configuration.
_VOLATILE = ("nf_conntrack_count",)


def _sysctls() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk("/proc/sys/net"):
        for name in files:
            if name in _VOLATILE:
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as f:
                    out[path[len("/proc/sys/"):].replace("/", ".")] = f.read().strip()
            except OSError:
                pass  # write-only entries (e.g. route flush)
    return out


def _ruleset() -> str:
    try:
        import nftables  # noqa: PLC0415 - python3-nftables is Debian's and optional: only rule sets need it (Debian's python3-nftables (libnftables))
    except ImportError:
        return "python3-nftables not installed"
    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, out, err = nft.cmd("list ruleset")
    return out if rc == 0 else f"error: {err}"


def snapshot() -> dict[str, object]:
    with IPRoute() as ipr:
        links = sorted((l.get_attr("IFLA_IFNAME"), l["flags"], bool(l.get_attr("IFLA_XDP") and
                        l.get_attr("IFLA_XDP").get_attr("IFLA_XDP_PROG_ID"))) for l in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr())
        routes = sorted(str(sorted((k, str(v)) for k, v in r["attrs"] if k in ("RTA_DST", "RTA_GATEWAY", "RTA_OIF")))
                        for r in ipr.get_routes(family=0))
        # Neighbour entries someone configured (permanent); the rest come and go with the host's own traffic
        # and age out by themselves (a long run sees its gateway's IPv6 neighbours expire).
        neigh = sorted((n["ifindex"], n.get_attr("NDA_DST")) for n in ipr.get_neighbours() if n["state"] & NUD_PERMANENT)
    return {"links": links, "addrs": addrs, "routes": routes, "neigh": neigh, "netns": sorted(netns.listnetns()),
            "sysctls": _sysctls(), "nftables": _ruleset()}


ON_DEMAND = ("net.netfilter.", "net.nf_conntrack_max")  # nf_conntrack's, when a ct rule loads the module


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What changed, one line per item (sysctls by key)."""
    out = []
    for key in before:
        a, b = before[key], after[key]
        if isinstance(a, dict) and isinstance(b, dict):  # the sysctls; new ones are a module the kernel loaded on
            # demand (nf_conntrack for a ct rule, on a kernel that has it as a module): its defaults, not a change
            out += [f"sysctl {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k) and (k in a or not k.startswith(ON_DEMAND))]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out
