// SPDX-License-Identifier: GPL-2.0
/* tc classifiers that meet VLAN-tagged frames the ways real ones do (tests/test_tc_vlan.py and the
 * corpus of tests/test_agreement.py). At tc ingress the kernel has already taken a frame's outer
 * 802.1Q/802.1ad tag out of the frame into the sk_buff (vlan_present, vlan_tci, vlan_proto), and
 * skb->protocol is the ethertype behind it; at tc egress a frame a packet socket sent keeps its tags. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define DNS 53

/* UDP to port 53 in the IPv4 or IPv6 header at l3 (ethertype proto)? */
static __always_inline int dns(__be16 proto, void *l3, void *end)
{
	void *l4;
	__u8 next;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return 0;
		next = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return 0;
		next = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return 0;
	}
	struct udphdr *u = l4;
	return next == IPPROTO_UDP && (void *)(u + 1) <= end && u->dest == bpf_htons(DNS);
}

/* Drops DNS by the Ethernet header's type alone, as most filters parse. */
SEC("tc")
int dns_by_h_proto(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	return dns(eth->h_proto, eth + 1, end) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Drops IPv4 DNS by skb->protocol, reading the IPv4 header behind the Ethernet header. */
SEC("tc")
int dns_by_skb_protocol(struct __sk_buff *skb)
{
	struct iphdr ip;
	__be16 dport;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP || ip.ihl < 5)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip.ihl * 4 + 2, &dport, sizeof(dport)))
		return TC_ACT_OK;
	return dport == bpf_htons(DNS) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Walks up to two tags in the frame (802.1Q or 802.1ad) to the IP header; drops DNS, and anything
 * whose innermost tag in the frame is VLAN 666. */
SEC("tc")
int dns_through_tags(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u16 vid = 0;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	__be16 proto = eth->h_proto;
	void *cur = eth + 1;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *v = cur;
		if ((void *)(v + 1) > end)
			return TC_ACT_OK;
		vid = bpf_ntohs(v->h_vlan_TCI) & 0x0fff;
		proto = v->h_vlan_encapsulated_proto;
		cur = v + 1;
	}
	if (vid == 666)
		return TC_ACT_SHOT;
	return dns(proto, cur, end) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Drops VLAN 10 by the tag the kernel keeps in the sk_buff. */
SEC("tc")
int drop_vlan_10(struct __sk_buff *skb)
{
	return skb->vlan_present && (skb->vlan_tci & 0x0fff) == 10 ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Takes the outer tag off (bpf_skb_vlan_pop), then drops DNS by the Ethernet header's type. */
SEC("tc")
int pop_then_dns(struct __sk_buff *skb)
{
	bpf_skb_vlan_pop(skb);
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	return dns(eth->h_proto, eth + 1, end) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Marks IPv4 DNS Expedited Forwarding (DSCP 46) and sends it back out of the interface it came in on. */
SEC("tc")
int remark_dns(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || !dns(eth->h_proto, eth + 1, end))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	__be16 old = *(__be16 *)ip, new;
	__u8 tos = 46 << 2;
	bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + 1, &tos, 1, 0);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + sizeof(struct ethhdr) + sizeof(struct iphdr) > end)
		return TC_ACT_SHOT;
	new = *(__be16 *)(data + sizeof(struct ethhdr));
	bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check), old, new, sizeof(new));
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
