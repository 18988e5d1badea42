// SPDX-License-Identifier: GPL-2.0
/* Issue 19, finding 6 (tests/test_oracle.py): an XDP dispatcher that tail-calls through a program array
 * its object fills itself (.values in .maps: libbpf puts oracle_tail_drop in slot 0 while it loads the
 * object). IPv4 UDP goes to slot 0 and is dropped there; everything else passes, as does a frame whose
 * slot is empty. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int oracle_tail_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int (void *));
} oracle_jmp SEC(".maps") = {
	.values = { [0] = (void *)&oracle_tail_drop },
};

SEC("xdp")
int oracle_tail(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) <= end && eth->h_proto == bpf_htons(0x0800) && ip->protocol == IPPROTO_UDP)
		bpf_tail_call(ctx, &oracle_jmp, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
