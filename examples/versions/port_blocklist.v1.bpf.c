/* The previous release of port_blocklist.bpf.c: RDP (3389) was not yet blocked.
 * examples/test_regression.py compares it with the current one. */
// SPDX-License-Identifier: GPL-2.0
/* Port blocklist, libbpf style (the same rules as port_blocklist.c, the bcc form): TCP and UDP to a
 * blocked destination port are dropped, over IPv4 and IPv6. A few ports are always blocked; more
 * can be added at run time through blocked_ports, or at load time through the extra_port global.
 * Built by `make examples` into build/port_blocklist.bpf.o, as a project's Makefile would. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);	/* destination port, host order */
	__type(value, __u8);
} blocked_ports SEC(".maps");

/* One more port to block, set by the loader before load (0: none). */
const volatile __u16 extra_port = 0;

static __always_inline int blocked_by_default(__u16 port)
{
	switch (port) {
	case 23:	/* telnet */
	case 135:	/* msrpc */
	case 445:	/* smb */
		return 1;
	}
	return 0;
}

SEC("xdp")
int port_blocklist(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4;
	__u8 proto;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return XDP_PASS;
		/* Later fragments carry no ports; without the dropped first one they never reassemble. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return XDP_PASS;
		proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		proto = ip6->nexthdr;   /* extension headers are not walked: such packets pass */
		l4 = ip6 + 1;
	} else {
		return XDP_PASS;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return XDP_PASS;

	/* TCP and UDP both start with the two ports, so the 8-byte UDP header covers either. */
	struct udphdr *ports = l4;
	if ((void *)(ports + 1) > end)
		return XDP_PASS;
	__u16 dport = bpf_ntohs(ports->dest);
	if (blocked_by_default(dport) || (extra_port && dport == extra_port) || bpf_map_lookup_elem(&blocked_ports, &dport))
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
