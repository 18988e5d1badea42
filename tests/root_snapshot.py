"""What the root network namespace looks like, to prove a run left it as it was."""

from __future__ import annotations

import subprocess

from pyroute2 import IPRoute


def snapshot() -> dict[str, object]:
    with IPRoute() as ipr:
        links = sorted((l.get_attr("IFLA_IFNAME"), l["flags"], bool(l.get_attr("IFLA_XDP") and
                        l.get_attr("IFLA_XDP").get_attr("IFLA_XDP_PROG_ID"))) for l in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr())
        routes = sorted(str(sorted((k, str(v)) for k, v in r["attrs"] if k in ("RTA_DST", "RTA_GATEWAY", "RTA_OIF")))
                        for r in ipr.get_routes(family=0))
        neigh = sorted((n["ifindex"], n.get_attr("NDA_DST")) for n in ipr.get_neighbours())
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {"links": links, "addrs": addrs, "routes": routes, "neigh": neigh, "netns": netns}
