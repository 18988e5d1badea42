// SPDX-License-Identifier: GPL-2.0
/* Meant to drop TCP to destination ports 1000..1999 (over IPv4); a planted off-by-one drops 2000 too.
 * tests/test_strategies.py finds it with hypothesis and shrinks it to the one packet that shows it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define IPPROTO_TCP 6

SEC("xdp")
int planted(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > end)
		return XDP_PASS;
	__u16 dport = bpf_ntohs(tcp->dest);
	if (dport >= 1000 && dport <= 2000)	/* the bug: 2000 is not meant to be dropped */
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
