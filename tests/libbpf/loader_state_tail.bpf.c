// SPDX-License-Identifier: GPL-2.0
/* A dispatcher whose tail-call targets are declared in the object: libbpf fills the program array's
 * slot 0 while it loads the object (.values in .maps). Slot 1 is left for the test to fill.
 * UDP to port 1 takes slot 1; every other frame slot 0; a slot with no program passes the frame. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int tail_drop(struct xdp_md *ctx) { return XDP_DROP; }

SEC("xdp")
int tail_pass(struct xdp_md *ctx) { return XDP_PASS; }

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, int (void *));
} jmp SEC(".maps") = {
	.values = { [0] = (void *)&tail_drop },
};

SEC("xdp")
int dispatch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);  /* no IP options in these tests */
	__u32 slot = 0;

	if ((void *)(udp + 1) <= end && eth->h_proto == bpf_htons(0x0800) && ip->protocol == 17 &&
	    udp->dest == bpf_htons(1))
		slot = 1;
	bpf_tail_call(ctx, &jmp, slot);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
