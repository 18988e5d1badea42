// SPDX-License-Identifier: GPL-2.0
/* A policy looked up through maps of maps whose inner maps are declared in the object: libbpf puts
 * inner1 into outer[0] and inner2 into outer_h[7] while it loads the object (.values in .maps).
 * With a policy map installed a frame passes only if the map's entry 0 allows it (nonzero);
 * with none installed, every frame passes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} inner1 SEC(".maps"), inner2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer SEC(".maps") = {
	.values = { [0] = &inner1 },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer_h SEC(".maps") = {
	.values = { [7] = &inner2 },
};

static __always_inline int allowed(void *policy)
{
	__u32 zero = 0, *allow;

	if (!policy)
		return XDP_PASS;
	allow = bpf_map_lookup_elem(policy, &zero);
	return allow && *allow ? XDP_PASS : XDP_DROP;
}

SEC("xdp")
int policy(struct xdp_md *ctx)
{
	__u32 zero = 0;

	return allowed(bpf_map_lookup_elem(&outer, &zero));
}

SEC("xdp")
int policy_hash(struct xdp_md *ctx)
{
	__u32 seven = 7;

	return allowed(bpf_map_lookup_elem(&outer_h, &seven));
}

char LICENSE[] SEC("license") = "GPL";
