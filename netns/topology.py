"""DUT and peer namespaces joined by one veth pair, configured so that only injected frames cross it."""

from __future__ import annotations

import dataclasses
import itertools

from . import owner
from .namespace import Namespace

# Documentation ranges only (RFC 5737, RFC 3849).
DUT_IP, PEER_IP, PREFIX = "192.0.2.1", "192.0.2.2", 24
DUT_IP6, PEER_IP6, PREFIX6 = "2001:db8::1", "2001:db8::2", 64
DUT_MAC, PEER_MAC = "02:00:5e:00:53:01", "02:00:5e:00:53:02"

# IPv6 would otherwise send DAD probes, router solicitations and MLD reports into the
# inspector: a 5,000-frame run was once seen as 5,004 frames.
_QUIET_IPV6 = {"accept_dad": 0, "dad_transmits": 0, "router_solicitations": 0, "accept_ra": 0}

_serial = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One end of the veth: its namespace, interface and addresses."""

    ns: Namespace | None  # None in the unit tier, which has no topology
    ifname: str
    ifindex: int
    mac: str
    ip: str
    ip6: str


# The same addresses without namespaces, for the unit tier (BPF_PROG_TEST_RUN). The kernel's test
# runs deliver frames as if received on the loopback (ifindex 1) of the caller's namespace.
UNIT_DUT = Endpoint(None, "lo", 1, DUT_MAC, DUT_IP, DUT_IP6)
UNIT_PEER = Endpoint(None, "", 0, PEER_MAC, PEER_IP, PEER_IP6)


class Topology:
    """Two throwaway namespaces, ``dut`` and ``peer``, and a veth pair created directly inside them.

    Nothing is created in the root namespace. Closing drops the namespaces, and the kernel
    removes the veth pair (and any XDP program on it) with them.
    """

    def __init__(self, label: str = "", mtu: int = 1500) -> None:
        n = next(_serial)
        # The label goes on both veth ends (ifalias): what the cleanup command recognises as ours.
        self.label = f"{owner.PREFIX} {owner.mark()} #{n} {label}"[:250]
        self._namespaces: list[Namespace] = []
        try:
            dut_ns = self._namespace("dut")
            peer_ns = self._namespace("peer")
            dut_ns.ipr.link(
                "add", ifname="dut0", kind="veth", address=DUT_MAC, mtu=mtu, ifalias=self.label,
                peer={"ifname": "peer0", "net_ns_fd": peer_ns.fd, "address": PEER_MAC, "mtu": mtu},
            )
            self.dut = self._configure(dut_ns, "dut0", DUT_MAC, DUT_IP, DUT_IP6, PEER_MAC, PEER_IP, PEER_IP6)
            self.peer = self._configure(peer_ns, "peer0", PEER_MAC, PEER_IP, PEER_IP6, DUT_MAC, DUT_IP, DUT_IP6)
            self.peer.ns.ipr.link("set", index=self.peer.ifindex, ifalias=self.label)
        except BaseException:
            self.close()
            raise

    def _namespace(self, role: str) -> Namespace:
        ns = Namespace(f"{self.label} {role}")
        self._namespaces.append(ns)
        for scope in ("all", "default"):
            for key, value in _QUIET_IPV6.items():
                ns.sysctl(f"net.ipv6.conf.{scope}.{key}", value)
        # The mark also goes on lo, which lives as long as the namespace: a veth end vanishes
        # when the other namespace goes.
        ns.ipr.link("set", index=1, state="up", ifalias=f"{self.label} {role}")
        return ns

    @staticmethod
    def _configure(ns: Namespace, ifname: str, mac: str, ip: str, ip6: str,
                   other_mac: str, other_ip: str, other_ip6: str) -> Endpoint:
        ipr = ns.ipr
        idx = ipr.link_lookup(ifname=ifname)[0]
        # NOARP: no solicited-node multicast join (so no MLD report) and no ARP/ND probes;
        # the static neighbours below are all the stack needs.
        ipr.link("set", index=idx, arp=False)
        ipr.addr("add", index=idx, address=ip, prefixlen=PREFIX)
        ipr.addr("add", index=idx, address=ip6, prefixlen=PREFIX6, flags=0x02)  # IFA_F_NODAD
        ipr.neigh("add", dst=other_ip, lladdr=other_mac, ifindex=idx, state="permanent")
        ipr.neigh("add", dst=other_ip6, lladdr=other_mac, ifindex=idx, state="permanent", family=10)
        ipr.link("set", index=idx, state="up")
        return Endpoint(ns, ifname, idx, mac, ip, ip6)

    def close(self) -> None:
        while self._namespaces:
            self._namespaces.pop().close()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
