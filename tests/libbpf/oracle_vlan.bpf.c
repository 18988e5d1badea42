// SPDX-License-Identifier: GPL-2.0
/* Issue 19, finding 5 (tests/test_oracle.py): a tc classifier that reads eth->h_proto, as most do, and
 * drops IPv4 UDP to port 53. On a real receive path the kernel has moved an 802.1Q tag out of the frame
 * into the sk_buff before tc ingress, so a tagged DNS datagram is dropped too: a harness's unit tier must
 * give the verdict the kernel gives there. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800

SEC("tc")
int oracle_vlan(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end)
		return TC_ACT_OK;
	return udp->dest == bpf_htons(53) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
