// SPDX-License-Identifier: GPL-2.0
/* Issue 19, finding 7 (tests/test_oracle.py): an XDP filter configured through a map whose value is a
 * struct of bitfields, as a loader writes it: IPv4 traffic of protocol `proto` to port `port` gets the
 * action `action` while `enabled` is set; everything else passes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct oracle_rule {
	__u32 enabled : 1;
	__u32 proto : 8;
	__u32 port : 16;
	__u32 action : 3;
	__u32 spare : 4;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct oracle_rule);
} oracle_rules SEC(".maps");

SEC("xdp")
int oracle_bitfield(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;

	struct oracle_rule *rule = bpf_map_lookup_elem(&oracle_rules, &zero);
	if (!rule || !rule->enabled)
		return XDP_PASS;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->protocol != rule->proto)
		return XDP_PASS;
	struct udphdr *ports = (void *)ip + ip->ihl * 4;   /* TCP and UDP both start with the ports */
	if ((void *)(ports + 1) > end || bpf_ntohs(ports->dest) != rule->port)
		return XDP_PASS;
	return rule->action;
}

char LICENSE[] SEC("license") = "GPL";
