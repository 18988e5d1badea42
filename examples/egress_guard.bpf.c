// SPDX-License-Identifier: GPL-2.0
/* Egress guard (tc, egress): the host may not open connections to a port on the blocklist, which
 * its operator keeps in a map (blocked_dports). Outbound TCP SYNs (without ACK) and UDP datagrams
 * to a listed port are dropped; replies and everything else go out. Traffic carrying the mark
 * ALLOW_MARK (set by an allow-listed service through SO_MARK) is never blocked. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ALLOW_MARK 0x51

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);	/* destination port, host order */
	__type(value, __u8);
} blocked_dports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} blocked_count SEC(".maps");

SEC("tc")
int egress_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 proto;
	void *l4;

	if (skb->mark == ALLOW_MARK || (void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return TC_ACT_OK;
		proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return TC_ACT_OK;
	}
	__u16 dport;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end || !t->syn || t->ack)
			return TC_ACT_OK;	/* only new connections */
		dport = bpf_ntohs(t->dest);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return TC_ACT_OK;
		dport = bpf_ntohs(u->dest);
	} else {
		return TC_ACT_OK;
	}
	if (!bpf_map_lookup_elem(&blocked_dports, &dport))
		return TC_ACT_OK;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&blocked_count, &zero);
	if (n)
		*n += 1;
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
