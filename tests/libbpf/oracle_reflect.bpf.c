// SPDX-License-Identifier: GPL-2.0
/* tests/test_oracle.py: an XDP program that sends frames back and rewrites what it passes, so that the oracle
 * compares output frames too (the other programs mostly only judge). IPv4 UDP to a port below 1024 goes back out
 * (XDP_TX) with its Ethernet addresses swapped; IPv4 TCP to port 23 is dropped; every other IPv4 frame passes
 * with its TTL lowered by one (checksum left as it was: a filter's bug for the stack, not for the oracle). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int oracle_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return XDP_PASS;
	struct udphdr *ports = (void *)ip + ip->ihl * 4;   /* TCP and UDP both start with the ports */
	if ((void *)(ports + 1) <= end) {
		if (ip->protocol == IPPROTO_UDP && bpf_ntohs(ports->dest) < 1024) {
			__u8 mac[6];
			__builtin_memcpy(mac, eth->h_dest, 6);
			__builtin_memcpy(eth->h_dest, eth->h_source, 6);
			__builtin_memcpy(eth->h_source, mac, 6);
			return XDP_TX;
		}
		if (ip->protocol == IPPROTO_TCP && ports->dest == bpf_htons(23))
			return XDP_DROP;
	}
	ip->ttl--;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
