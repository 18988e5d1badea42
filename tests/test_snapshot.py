"""The root-namespace snapshot sees configuration, not traffic: a permanent neighbour entry someone adds is
a change; entries the host's own traffic makes and the kernel ages out are not (a 26-minute run saw its
gateway's IPv6 neighbours expire and was failed for it)."""


import pytest

from pktassert.netns import Namespace
from pktassert.netns.snapshot import differences, snapshot


@pytest.mark.usefixtures("pktassert_ready")
def test_traffic_made_neighbours_are_not_a_change_and_configured_ones_are():
    with Namespace("pktassert test") as ns:
        ns.ipr.link("add", ifname="d0", kind="veth", peer="d1")  # (no dummy module here: a veth pair)
        d0 = ns.ipr.link_lookup(ifname="d0")[0]
        ns.ipr.link("set", index=d0, state="up")
        ns.ipr.addr("add", index=d0, address="198.51.100.1", prefixlen=24)
        with ns.entered():
            before = snapshot()
            # What traffic leaves behind: an entry in a state of the kernel's own (reachable, then stale, gone).
            ns.ipr.neigh("add", dst="198.51.100.9", lladdr="02:00:00:00:00:09", ifindex=d0, state=0x02)
            assert differences(before, snapshot()) == []
            ns.ipr.neigh("add", dst="198.51.100.7", lladdr="02:00:00:00:00:07", ifindex=d0, state=0x80)  # permanent
            (said,) = differences(before, snapshot())
            assert said.startswith("neigh:") and "198.51.100.7" in said and "198.51.100.9" not in said, said
