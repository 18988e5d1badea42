// SPDX-License-Identifier: GPL-2.0
/* Entry functions whose names start with '_', as xdp-tutorial names some of its programs
 * (packet-solutions/tc_reply_kern_02.c: `int _fix_port_egress(struct __sk_buff *skb)`).
 * For tests/test_entry_and_errors.py: each returns a verdict chosen by the UDP destination port. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* The UDP destination port of an IPv4 frame, or 0. */
static __always_inline int udp_dport(void *data, void *end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		return 0;
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end)
		return 0;
	return bpf_ntohs(udp->dest);
}

SEC("xdp")
int _xdp_prog(struct xdp_md *ctx)
{
	int port = udp_dport((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	if (port == 9)
		return XDP_DROP;
	if (port == 7)
		return XDP_TX;
	return XDP_PASS;
}

SEC("tc")
int _fix_port_egress(struct __sk_buff *skb)
{
	int port = udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);
	if (port == 9)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
