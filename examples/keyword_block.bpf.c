// SPDX-License-Identifier: GPL-2.0
/* Keyword block (XDP, libbpf): drop IPv4 TCP and UDP packets whose payload contains a banned keyword
 * ("/etc/passwd") within its first 64 bytes; everything else passes. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define SCAN 64
static const char keyword[] = "/etc/passwd";
#define KEYLEN (sizeof(keyword) - 1)

SEC("xdp")
int keyword_block(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return XDP_PASS;
	void *l4 = (void *)ip + ip->ihl * 4;
	unsigned char *payload;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end || tcp->doff < 5)
			return XDP_PASS;
		payload = (void *)tcp + tcp->doff * 4;
	} else if (ip->protocol == IPPROTO_UDP) {
		payload = l4 + sizeof(struct udphdr);
	} else {
		return XDP_PASS;
	}
	for (int i = 0; i < SCAN; i++) {
		unsigned char *at = payload + i;
		if ((void *)(at + KEYLEN) > end)
			break;
		int k = 0;
		for (; k < KEYLEN; k++)
			if (at[k] != keyword[k])
				break;
		if (k == KEYLEN)
			return XDP_DROP;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
