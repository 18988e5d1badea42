"""What the kernel's drop reasons mean, and for the common ones what in a test or a rule set usually
causes them and the fix. Meanings paraphrase the kernel's own comments (include/net/dropreason-core.h,
include/net/dropreason.h in older kernels), the union over kernels 6.1 .. 6.18 and a later one. A name whose
comment pktassert could not check (6.18's SKB_RX_HEADROOM) is left out: it gets the honest generic line.

Only the running kernel's reasons (its BTF, ``fate.reason_names()``) are ever explained: the table may
know names this kernel lacks, and text for one of them is never shown."""

from __future__ import annotations

from pktassert.observers.fate import reason_names

# One short line per reason, in the header's order.
MEANING: dict[str, str] = {
    "SKB_NOT_DROPPED_YET": "not a drop: the packet had not been dropped",
    "SKB_CONSUMED": "not a drop: the stack consumed the packet normally",
    "NOT_SPECIFIED": "the code that freed the packet gave no reason",
    "NO_SOCKET": "no socket was bound to the packet's destination (address, protocol and port)",
    "SOCKET_CLOSE": "the socket was closed with the packet still queued on it",
    "SOCKET_FILTER": "a socket filter (classic BPF or eBPF on the socket) refused the packet",
    "SOCKET_RCVBUFF": "the receiving socket's buffer was full",
    "UNIX_DISCONNECT": "a Unix datagram socket's queue was purged on reconnect or a closed peer",
    "UNIX_SKIP_OOB": "Unix socket out-of-band data was skipped by a read without MSG_OOB",
    "PKT_TOO_SMALL": "the packet was shorter than its headers say it is",
    "TCP_CSUM": "the TCP checksum was wrong",
    "UDP_CSUM": "the UDP checksum was wrong",
    "NETFILTER_DROP": "netfilter dropped it (an nftables/iptables rule or a chain's policy, or conntrack)",
    "OTHERHOST": "the frame was addressed to another host's MAC (seen only because the device is promiscuous)",
    "IP_CSUM": "the IPv4 header checksum was wrong",
    "IP_INHDR": "the IP header was invalid (version, header or total length), or its TTL ran out when forwarded",
    "IP_RPFILTER": "reverse-path filtering (rp_filter) rejected the source address on this interface",
    "UNICAST_IN_L2_MULTICAST": "a unicast IP packet arrived in a multicast or broadcast Ethernet frame",
    "XFRM_POLICY": "an IPsec (xfrm) policy check failed",
    "IP_NOPROTO": "no handler and no raw socket for the packet's IP protocol",
    "PROTO_MEM": "the protocol's memory limit was reached (e.g. udp_mem)",
    "TCP_AUTH_HDR": "TCP-MD5 or TCP-AO options appeared twice or were malformed",
    "TCP_MD5NOTFOUND": "a TCP-MD5 signature was required but missing",
    "TCP_MD5UNEXPECTED": "a TCP-MD5 signature arrived where none was expected",
    "TCP_MD5FAILURE": "the TCP-MD5 signature was wrong",
    "TCP_AONOTFOUND": "a TCP-AO signature was required but missing",
    "TCP_AOUNEXPECTED": "a TCP-AO signature arrived where none was expected",
    "TCP_AOKEYNOTFOUND": "the TCP-AO key named by the segment is unknown",
    "TCP_AOFAILURE": "the TCP-AO signature was wrong",
    "SOCKET_BACKLOG": "the socket's backlog (held while a process owned the socket) was full",
    "TCP_FLAGS": "the TCP flags were invalid for the connection's state",
    "TCP_ABORT_ON_DATA": "data arrived for a TCP socket already closed by its application (it was reset)",
    "TCP_ZEROWINDOW": "TCP data arrived while the receive window was zero",
    "TCP_OLD_DATA": "the TCP data had been received before (a retransmission)",
    "TCP_OVERWINDOW": "the TCP data started beyond the right edge of the receive window",
    "TCP_OFOMERGE": "the TCP data was already in the out-of-order queue",
    "TCP_RFC7323_PAWS": "the TCP timestamp failed the PAWS check (older than the last one seen)",
    "TCP_RFC7323_PAWS_ACK": "PAWS check failed for an old TCP ACK",
    "TCP_RFC7323_TW_PAWS": "PAWS check failed for a socket in TIME_WAIT",
    "TCP_RFC7323_TSECR": "the TCP timestamp echo reply (TSecr) was invalid",
    "TCP_LISTEN_OVERFLOW": "the listening TCP socket's accept or SYN queue was full",
    "TCP_OLD_SEQUENCE": "the TCP sequence number was old (a duplicate segment)",
    "TCP_INVALID_SEQUENCE": "the TCP sequence number was outside the receive window",
    "TCP_INVALID_END_SEQUENCE": "the TCP segment ended beyond the receive window",
    "TCP_INVALID_ACK_SEQUENCE": "the TCP ACK number was outside what had been sent (snd_una .. snd_nxt)",
    "TCP_RESET": "an invalid TCP RST (for example out of window)",
    "TCP_INVALID_SYN": "a SYN arrived where none was expected",
    "TCP_CLOSE": "the TCP socket was in the CLOSE state",
    "TCP_FASTOPEN": "a TCP Fast Open request socket dropped it",
    "TCP_OLD_ACK": "the TCP ACK was old but within the window",
    "TCP_TOO_OLD_ACK": "the TCP ACK was too old",
    "TCP_ACK_UNSENT_DATA": "the TCP ACK acknowledged data never sent",
    "TCP_OFO_QUEUE_PRUNE": "pruned from the TCP out-of-order queue under memory pressure",
    "TCP_OFO_DROP": "the out-of-order TCP data was already in the receive queue",
    "IP_OUTNOROUTES": "no route for the packet on output",
    "BPF_CGROUP_EGRESS": "a cgroup skb eBPF program dropped it on egress",
    "IPV6DISABLED": "IPv6 is disabled on the device",
    "NEIGH_CREATEFAIL": "a neighbour (ARP/NDP) entry could not be created",
    "NEIGH_FAILED": "the next hop's neighbour (ARP/NDP) entry had failed to resolve",
    "NEIGH_QUEUEFULL": "the queue of packets waiting for ARP/NDP resolution was full",
    "NEIGH_DEAD": "the neighbour entry was already dead",
    "NEIGH_HH_FILLFAIL": "the link-layer header could not be filled in from the neighbour entry",
    "TC_EGRESS": "a tc program or action dropped it at egress",
    "SECURITY_HOOK": "a security module (LSM) hook dropped it",
    "QDISC_DROP": "the qdisc refused it on output",
    "QDISC_OVERLIMIT": "the qdisc was over its total buffer limit",
    "QDISC_CONGESTED": "the qdisc's queue management (AQM) dropped it for congestion",
    "CAKE_FLOOD": "the CAKE qdisc's flood protection dropped it",
    "FQ_BAND_LIMIT": "the fq qdisc's per-band limit was reached",
    "FQ_HORIZON_LIMIT": "the fq qdisc found its timestamp too far in the future",
    "FQ_FLOW_LIMIT": "the fq qdisc's per-flow limit was reached",
    "CPU_BACKLOG": "the per-CPU input backlog was full (netdev_max_backlog) or an RPS flow limit hit",
    "XDP": "an XDP program dropped it (generic XDP: as an sk_buff)",
    "TC_INGRESS": "a tc program or action dropped it at ingress",
    "UNHANDLED_PROTO": "the protocol is not implemented or not supported here",
    "SKB_CSUM": "computing the packet's checksum failed",
    "SKB_GSO_SEG": "GSO segmentation failed",
    "SKB_UCOPY_FAULT": "copying the data from user space failed",
    "DEV_HDR": "the device's own header or metadata was invalid",
    "DEV_READY": "the device was not ready (down, or not set up) to send or receive",
    "FULL_RING": "the device's ring buffer was full",
    "NOMEM": "out of memory",
    "HDR_TRUNC": "a protocol header could not be pulled: the packet was cut short",
    "TAP_FILTER": "an eBPF filter on a tun/tap device dropped it",
    "TAP_TXFILTER": "a tun/tap device's transmit filter dropped it",
    "ICMP_CSUM": "the ICMP checksum was wrong",
    "INVALID_PROTO": "the packet broke its protocol's rules (e.g. an ICMP timestamp to broadcast)",
    "IP_INADDRERRORS": "the destination address was invalid here (host unreachable)",
    "IP_INNOROUTES": "no route to the destination on input (network unreachable)",
    "IP_LOCAL_SOURCE": "the source address is one of this host's own",
    "IP_INVALID_SOURCE": "the source address was invalid (multicast, broadcast, or 0 for other than IGMP)",
    "IP_LOCALNET": "the source or destination is a loopback (127/8) address arriving from outside",
    "IP_INVALID_DEST": "the destination address was invalid (0.0.0.0)",
    "PKT_TOO_BIG": "the packet was larger than allowed (the MTU, say)",
    "DUP_FRAG": "a duplicate IP fragment",
    "FRAG_REASM_TIMEOUT": "IP fragment reassembly timed out",
    "FRAG_TOO_FAR": "the IPv4 fragment came too far out of order (ipfrag_max_dist)",
    "TCP_MINTTL": "the TTL or hop limit was below the socket's minimum (IP_MINTTL, IPV6_MINHOPCOUNT)",
    "IPV6_BAD_EXTHDR": "an IPv6 extension header was invalid",
    "IPV6_NDISC_FRAG": "a fragmented neighbour discovery message (not allowed)",
    "IPV6_NDISC_HOP_LIMIT": "a neighbour discovery message whose hop limit was not 255",
    "IPV6_NDISC_BAD_CODE": "a neighbour discovery message with an invalid ICMPv6 code",
    "IPV6_NDISC_BAD_OPTIONS": "a neighbour discovery message with invalid options",
    "IPV6_NDISC_NS_OTHERHOST": "a neighbour solicitation for another host's address",
    "QUEUE_PURGE": "freed in bulk when a queue was purged",
    "TC_COOKIE_ERROR": "processing a tc extension cookie failed",
    "PACKET_SOCK_ERROR": "a packet socket's filter matched but the socket could not take the packet",
    "TC_CHAIN_NOTFOUND": "a tc chain lookup failed",
    "TC_RECLASSIFY_LOOP": "tc reclassified the packet too many times",
    "VXLAN_INVALID_HDR": "the VXLAN header was invalid (reserved bits set, or the I flag clear)",
    "VXLAN_VNI_NOT_FOUND": "no VXLAN device for the packet's VNI",
    "MAC_INVALID_SOURCE": "the source MAC address was invalid",
    "VXLAN_ENTRY_EXISTS": "a VXLAN forwarding entry could not be moved (static, or a next hop)",
    "NO_TX_TARGET": "no target to transmit the packet to",
    "IP_TUNNEL_ECN": "dropped on tunnel decapsulation for its ECN bits (RFC 6040)",
    "TUNNEL_TXINFO": "the packet lacked the tunnel metadata an external-mode device needs",
    "LOCAL_MAC": "the source MAC address is this device's own",
    "ARP_PVLAN_DISABLE": "a non-IP packet to be forwarded back out its device, without proxy_arp_pvlan",
    "MAC_IEEE_MAC_CONTROL": "the destination MAC was an IEEE MAC Control address",
    "BRIDGE_INGRESS_STP_STATE": "the bridge port's STP state does not forward frames",
    "CAN_RX_INVALID_FRAME": "a malformed CAN frame",
    "CANFD_RX_INVALID_FRAME": "a malformed CAN FD frame",
    "CANXL_RX_INVALID_FRAME": "a malformed CAN XL frame",
    "PFMEMALLOC": "a packet from memory reserves reached a socket or path not allowed to use them",
    "DUALPI2_STEP_DROP": "the DualPI2 qdisc's step threshold dropped it",
    "PSP_INPUT": "PSP (encryption) input checks failed",
    "PSP_OUTPUT": "PSP (encryption) output checks failed",
    "RECURSION_LIMIT": "a loop between virtual devices (transmit recursion limit reached)",
    "BLACKHOLE": "a blackhole route",
    "MAX": "not a drop reason: the end of the kernel's list",
    "SUBSYS_MASK": "not a drop reason: the mask of subsystem reasons",
}

_LISTEN = "Fix: dut.listen(tcp=PORT) or dut.listen(udp=PORT) before inject()"
_CSUM = "Fix: leave chksum unset in the crafted packet so scapy computes it"
_FILTER = "Fix: it is the filter under test's decision: expect Fate.FILTER_DROPPED, or change the filter"

# (usual cause, fix) for the reasons a pktassert test commonly meets.
CAUSE: dict[str, tuple[str, str]] = {
    "NO_SOCKET": ("the test sent to a port (or protocol) the DUT does not listen on",
                  f"{_LISTEN}, or expect Fate.ANSWERED/DROPPED"),
    "NETFILTER_DROP": ("a rule of the rule set, or a chain's policy drop; r[i].rule and r[i].chain name it",
                       "Fix: change the rule set (or the packet), or expect Fate.NETFILTER_DROPPED"),
    "TCP_CSUM": ("the crafted packet set TCP(chksum=...) or changed bytes after scapy computed it", _CSUM),
    "UDP_CSUM": ("the crafted packet set UDP(chksum=...) or changed bytes after scapy computed it", _CSUM),
    "IP_CSUM": ("the crafted packet set IP(chksum=...) or changed the header after scapy computed it", _CSUM),
    "ICMP_CSUM": ("the crafted packet set ICMP(chksum=...)", _CSUM),
    "SOCKET_RCVBUFF": ("the test's listener was not read while packets arrived, or the flood outran it",
                       "Fix: read the listener (listener.received()) between injects, or send fewer or slower"),
    "SOCKET_BACKLOG": ("a flood to one socket faster than it is served", "Fix: send fewer packets at once"),
    "TCP_LISTEN_OVERFLOW": ("more SYNs to one listener than its queue holds",
                            "Fix: dut.listen(tcp=PORT, backlog=N) with a larger N, or send fewer SYNs"),
    "IP_NOPROTO": ("the packet's IP proto has no handler in the kernel (e.g. 253) and nothing listens for it",
                   "Fix: dut.listen(raw=PROTO) to take it, or expect Fate.DROPPED"),
    "OTHERHOST": ("the frame's destination MAC is not the DUT's",
                  "Fix: leave Ether dst unset (pktassert fills in the DUT's MAC) or use Ether(dst=dut.mac)"),
    "PKT_TOO_SMALL": ("a crafted length field (IP len, UDP len) larger than the bytes sent, or a truncated packet",
                      "Fix: leave len unset so scapy computes it"),
    "IP_INHDR": ("a crafted IP header: wrong version or ihl, a total length shorter than the header, or a TTL "
                 "of 1 on a packet the DUT forwards", "Fix: leave version/ihl/len unset; a TTL above 1 to forward"),
    "IP_RPFILTER": ("a spoofed source the DUT would not route back through the interface it came in on",
                    "Fix: a source the DUT routes back via the peer (the `dut` fixture's default route), or "
                    "rp_filter=0 in the DUT namespace"),
    "UNICAST_IN_L2_MULTICAST": ("a unicast IP destination in a frame sent to a multicast or broadcast MAC",
                                "Fix: leave Ether dst unset, or Ether(dst=dut.mac)"),
    "IP_INADDRERRORS": ("a destination address the DUT does not own and will not forward",
                        "Fix: send to dut.ip / dut.ip6"),
    "IP_INNOROUTES": ("a destination the DUT has no route to", "Fix: send to dut.ip / dut.ip6"),
    "IP_INVALID_SOURCE": ("a crafted multicast, broadcast or 0.0.0.0 source address",
                          "Fix: a unicast source (the peer's address, or a range in vary=)"),
    "IP_LOCAL_SOURCE": ("the source address is the DUT's own", "Fix: a source other than dut.ip"),
    "IP_LOCALNET": ("a 127.0.0.0/8 address in a packet from the wire", "Fix: a source and destination off loopback"),
    "NEIGH_FAILED": ("the DUT's answer (or forward) went to a next hop that did not answer ARP/NDP",
                     "Fix: answer from the peer's side, or route the source via the peer"),
    "NEIGH_QUEUEFULL": ("many answers waiting on one unresolved next hop (a flood of spoofed sources)",
                        "Fix: send fewer packets at once"),
    "TCP_FLAGS": ("a crafted TCP segment whose flags do not fit the connection (e.g. ACK without a connection)",
                  "Fix: start with flags=\"S\", or expect the stack's answer (Fate.ANSWERED)"),
    "TCP_INVALID_SEQUENCE": ("a crafted segment's seq does not fit the connection's window",
                             "Fix: take seq/ack from the connection (the SYN-ACK the peer received)"),
    "TCP_INVALID_END_SEQUENCE": ("a crafted segment's data runs past the window", "Fix: send less data per segment"),
    "TCP_OLD_DATA": ("a crafted segment repeats data already received (a replay)", "Fix: advance seq"),
    "TCP_OLD_SEQUENCE": ("a crafted segment repeats an old seq (a replay)", "Fix: advance seq"),
    "TCP_OFOMERGE": ("the same out-of-order segment sent twice", "Fix: send each segment once"),
    "TCP_OFO_DROP": ("the same segment sent twice", "Fix: send each segment once"),
    "TCP_RESET": ("a crafted RST whose seq is not in the window (or for no connection)",
                  "Fix: take seq from the connection, or expect Fate.DROPPED"),
    "TCP_INVALID_SYN": ("a SYN sent again to an established connection", "Fix: a new sport per connection"),
    "TCP_ACK_UNSENT_DATA": ("a crafted ACK number beyond what the DUT sent", "Fix: ack = the DUT's seq + 1"),
    "TC_INGRESS": ("the tc filter under test (or another tc action) returned TC_ACT_SHOT", _FILTER),
    "TC_EGRESS": ("a tc filter on egress dropped the DUT's packet", _FILTER),
    "XDP": ("the XDP filter under test dropped it (in generic XDP)", _FILTER),
    "SOCKET_FILTER": ("a filter on the receiving socket (or a packet socket's) refused it",
                      "Fix: check the socket's own filter; pktassert's delivery filter on dut.listen() sockets "
                      "never refuses"),
    "IPV6DISABLED": ("IPv6 is switched off on the DUT's interface (disable_ipv6)",
                     "Fix: send IPv4, or enable IPv6 in the DUT namespace"),
    "NOT_SPECIFIED": ("kernel code that names no reason; often a frame the stack does not want (e.g. an unknown "
                      "EtherType, or a reply to nothing)", "Fix: check the frame's layers with r[i] and its fate"),
    "PKT_TOO_BIG": ("a crafted packet larger than the DUT interface's MTU", "Fix: send smaller packets, or fragment()"),
    "CPU_BACKLOG": ("a flood faster than the DUT's input backlog drains", "Fix: send fewer packets at once"),
    "DUP_FRAG": ("the same IP fragment sent twice", "Fix: send each fragment once (or expect it)"),
    "FRAG_REASM_TIMEOUT": ("a datagram's fragments not all sent", "Fix: send every fragment of it"),
    "UNHANDLED_PROTO": ("an EtherType or protocol the DUT's stack does not handle",
                        "Fix: check Ether type / the protocol field of the crafted packet"),
}


def _kernel_has(name: str) -> bool:
    return name in reason_names().values()


def meaning(name: str) -> str | None:
    """What ``name`` means, one line; None when the running kernel has no such reason. A reason the
    kernel has and the table lacks gets a line that says so."""
    if not _kernel_has(name):
        return None
    return MEANING.get(name, f"no description in pktassert's table for this kernel's reason {name}")


def cause(name: str) -> str | None:
    """"Usual cause: ... Fix: ..." for a common reason of the running kernel; None for any other."""
    if not _kernel_has(name) or name not in CAUSE:
        return None
    why, fix = CAUSE[name]
    return f"Usual cause: {why}. {fix}."


def explain(name: str) -> str:
    """``name``, what it means and, when common, its usual cause and fix; only ``name`` when the
    running kernel has no such reason."""
    said = meaning(name)
    if said is None:
        return name
    more = cause(name)
    return f"{name}: {said}." + (f" {more}" if more else "")
