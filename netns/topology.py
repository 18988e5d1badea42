"""DUT and peer namespaces joined by one veth pair, configured so that only injected frames cross it."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import time
from typing import Self

from pyroute2.netlink.exceptions import NetlinkError

from . import owner
from .namespace import Namespace

# Documentation ranges only (RFC 5737, RFC 3849).
DUT_IP, PEER_IP, PREFIX = "192.0.2.1", "192.0.2.2", 24
DUT_IP6, PEER_IP6, PREFIX6 = "2001:db8::1", "2001:db8::2", 64
DUT_MAC, PEER_MAC = "02:00:5e:00:53:01", "02:00:5e:00:53:02"
# The honeypot link (hp0 in the DUT namespace, hp1 in the honeypot's). Narrow prefixes at the top of
# the ranges, because tests spoof sources all over them: the DUT's replies to those must not
# start going to the honeypot once it exists.
HP_DUT_IP, HP_IP, HP_PREFIX = "203.0.113.253", "203.0.113.254", 30
HP_DUT_IP6, HP_IP6, HP_PREFIX6 = "2001:db8:ffff:ffff::1", "2001:db8:ffff:ffff::2", 126
HP_DUT_MAC, HP_MAC = "02:00:5e:00:53:03", "02:00:5e:00:53:04"
DUT_IFINDEX = 2

# IPv6 would otherwise send DAD probes, router solicitations and MLD reports into the
# inspector: a 5,000-frame run was once seen as 5,004 frames.
_QUIET_IPV6 = {"accept_dad": 0, "dad_transmits": 0, "router_solicitations": 0, "accept_ra": 0}


def ipv6_enabled() -> bool:
    """False on a kernel booted with ipv6.disable=1 (or built without IPv6): then the topology is IPv4-only."""
    return os.path.isdir("/proc/sys/net/ipv6")

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

    @property
    def netns(self) -> Namespace:
        """The live tier's namespace (the unit tier's endpoints have none, and nothing of it asks)."""
        if self.ns is None:
            raise RuntimeError(f"the unit tier's endpoint {self.ifname or '(peer)'} has no namespace")
        return self.ns


# The same addresses without namespaces, for the unit tier (BPF_PROG_TEST_RUN). The kernel's test
# runs deliver frames as if received on the loopback (ifindex 1) of the caller's namespace.
UNIT_DUT = Endpoint(None, "lo", 1, DUT_MAC, DUT_IP, DUT_IP6)
UNIT_PEER = Endpoint(None, "", 0, PEER_MAC, PEER_IP, PEER_IP6)


class Topology:
    """Two throwaway namespaces, ``dut`` and ``peer``, and a veth pair created directly inside them.

    Nothing is created in the root namespace. Closing drops the namespaces, and the kernel
    removes the veth pair (and any XDP program on it) with them.

    ``honeypot`` adds, the first time it is asked for, a third namespace where frames the DUT
    redirects can land (see the property).
    """

    def __init__(self, label: str = "", mtu: int = 1500) -> None:
        n = next(_serial)
        # The label goes on both veth ends (ifalias): what the cleanup command recognises as ours.
        self.label = f"{owner.PREFIX} {owner.mark()} #{n} {label}"[:250]
        self._namespaces: list[Namespace] = []
        self._mtu = mtu
        self._honeypot: tuple[Endpoint, Endpoint] | None = None
        self.stopped = False
        try:
            dut_ns = self._namespace("dut")
            peer_ns = self._namespace("peer")
            # dut0's index chosen (the namespace is fresh: only lo has one); peer0's is dut0's link.
            dut_ns.ipr.link(
                "add", ifname="dut0", index=DUT_IFINDEX, kind="veth", address=DUT_MAC, mtu=mtu, ifalias=self.label,
                peer={"ifname": "peer0", "net_ns_fd": peer_ns.fd, "address": PEER_MAC, "mtu": mtu},
            )
            peer_index = dut_ns.ipr.get_links(index=DUT_IFINDEX)[0].get_attr("IFLA_LINK")
            self.dut = self._configure(dut_ns, "dut0", DUT_MAC, DUT_IP, DUT_IP6, PEER_MAC, PEER_IP, PEER_IP6,
                                       idx=DUT_IFINDEX)
            self.peer = self._configure(peer_ns, "peer0", PEER_MAC, PEER_IP, PEER_IP6, DUT_MAC, DUT_IP, DUT_IP6,
                                        idx=peer_index)
            peer_ns.ipr.link("set", index=self.peer.ifindex, ifalias=self.label)
            self._await_activation(dut_ns, self.dut.ifindex)
        except BaseException:
            self.close()
            raise

    @property
    def honeypot(self) -> Endpoint:
        """hp1, the far end of a veth pair whose other end, ``honeypot_port`` (hp0), is in the DUT
        namespace: a DUT-side devmap holding hp0's ifindex (written from inside the DUT namespace)
        redirects frames here. Made on first use, closed with the topology. Its ifindex differs
        from the peer's, so a program attached to both can tell them apart by ingress ifindex."""
        return self._honeypot_link()[1]

    @property
    def honeypot_port(self) -> Endpoint:
        """hp0: the honeypot link's end in the DUT namespace, where the DUT redirects to."""
        return self._honeypot_link()[0]

    def _honeypot_link(self) -> tuple[Endpoint, Endpoint]:
        if self._honeypot is None:
            if not self._namespaces:
                raise RuntimeError("this topology is closed")
            hp_ns = self._namespace("honeypot")
            try:
                self._honeypot = self._make_honeypot(hp_ns)
            except BaseException:
                # Dropping the namespace removes hp1, and with it hp0: a later call starts afresh.
                self._namespaces.remove(hp_ns)
                hp_ns.close()
                raise
        return self._honeypot

    def _make_honeypot(self, hp_ns: Namespace) -> tuple[Endpoint, Endpoint]:
        dut_ns = self.dut.ns
        assert dut_ns is not None  # only the unit tier's endpoints have none
        # Made from the honeypot side, so hp1's ifindex can be chosen (pyroute2 cannot set the
        # veth peer's): both namespaces are fresh, so it would otherwise equal peer0's.
        hp_ns.ipr.link(
            "add", ifname="hp1", index=self.peer.ifindex + 1, kind="veth", address=HP_MAC,
            mtu=self._mtu, ifalias=self.label,
            peer={"ifname": "hp0", "net_ns_fd": dut_ns.fd, "address": HP_DUT_MAC, "mtu": self._mtu},
        )
        port = self._configure(dut_ns, "hp0", HP_DUT_MAC, HP_DUT_IP, HP_DUT_IP6, HP_MAC, HP_IP, HP_IP6,
                               HP_PREFIX, HP_PREFIX6)
        dut_ns.ipr.link("set", index=port.ifindex, ifalias=self.label)
        far = self._configure(hp_ns, "hp1", HP_MAC, HP_IP, HP_IP6, HP_DUT_MAC, HP_DUT_IP, HP_DUT_IP6,
                              HP_PREFIX, HP_PREFIX6)
        self._await_activation(dut_ns, port.ifindex)
        return port, far

    @staticmethod
    def _await_activation(ns: Namespace, ifindex: int) -> None:
        """Wait (bounded) until the veth end that came up first has been activated.

        It came up while its peer was down, without carrier, so the kernel activated its queue
        later, from the linkwatch work the peer's carrier event queued: until then the stack's
        frames sent out of it are dropped (tx_dropped). Measured: ~1 in 10 UDP datagrams sent
        from the DUT's stack right after construction were lost; linkwatch sets the operstate
        to UP as it activates the queue, within ~1-8 ms here. The other end was activated
        when it came up (its operstate says DOWN for another second: not an urgent event).
        """
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            link = ns.ipr.get_links(index=ifindex)[0]
            if link.get_attr("IFLA_OPERSTATE") == "UP":
                return
            time.sleep(0.0005)

    def _namespace(self, role: str) -> Namespace:
        ns = Namespace(f"{self.label} {role}")
        self._namespaces.append(ns)
        for scope in ("all", "default") if ipv6_enabled() else ():
            for key, value in _QUIET_IPV6.items():
                ns.sysctl(f"net.ipv6.conf.{scope}.{key}", value)
        # The mark also goes on lo, which lives as long as the namespace: a veth end vanishes
        # when the other namespace goes.
        ns.ipr.link("set", index=1, state="up", ifalias=f"{self.label} {role}")
        return ns

    @staticmethod
    def _configure(ns: Namespace, ifname: str, mac: str, ip: str, ip6: str,
                   other_mac: str, other_ip: str, other_ip6: str,
                   prefix: int = PREFIX, prefix6: int = PREFIX6, idx: int | None = None) -> Endpoint:
        ipr = ns.ipr
        if idx is None:
            idx = ipr.link_lookup(ifname=ifname)[0]
        # NOARP before any address: no solicited-node multicast membership (so no MLD report when the
        # link comes up; an address added first joins its group, and the link announces it at UP) and
        # no ARP/ND probes. The static neighbours below are all the stack needs.
        ipr.link("set", index=idx, arp=False)
        ipr.addr("add", index=idx, address=ip, prefixlen=prefix)
        ipr.neigh("add", dst=other_ip, lladdr=other_mac, ifindex=idx, state="permanent")
        if ipv6_enabled():
            ipr.addr("add", index=idx, address=ip6, prefixlen=prefix6, flags=0x02)  # IFA_F_NODAD
            ipr.neigh("add", dst=other_ip6, lladdr=other_mac, ifindex=idx, state="permanent", family=10)
        ipr.link("set", index=idx, state="up")
        return Endpoint(ns, ifname, idx, mac, ip, ip6)

    def route_via_peer(self) -> None:
        """Make the peer the DUT's gateway, as a router is a host's: the stack's answers to any
        source (the documentation ranges a test's packets come from) go back out of its veth."""
        assert self.dut.ns is not None
        ipr = self.dut.ns.ipr
        ipr.route("add", dst="0.0.0.0/0", gateway=PEER_IP, oif=self.dut.ifindex)
        if ipv6_enabled():
            ipr.route("add", dst="::/0", gateway=PEER_IP6, oif=self.dut.ifindex, family=10)

    def stop(self) -> None:
        """Every veth end down, at once: from here no frame crosses a link of this topology in either
        direction (a veth delivers only to an end that is up, and an end that goes down waits for its
        NAPI polls to finish), so nothing attached to it (a filter, the receiver) runs again. Called
        before the namespaces close: the kernel frees those later, asynchronously."""
        ends = [] if self.stopped else [self.dut, self.peer, *(self._honeypot or ())]
        self.stopped = True
        for end in ends:
            if end.ns is not None and end.ns.fd >= 0:
                try:
                    end.ns.ipr.link("set", index=end.ifindex, state="down")
                except NetlinkError as e:
                    if e.code != errno.ENODEV:  # the test deleted it: then nothing crosses it either
                        raise
        for ns in self._namespaces:
            ns.stopped = True

    def drop_iprs(self) -> None:
        """Close the calling thread's netlink sockets in each namespace (Namespace.drop_ipr)."""
        for ns in self._namespaces:
            ns.drop_ipr()

    def close(self) -> None:
        self._honeypot = None
        while self._namespaces:
            self._namespaces.pop().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
