// SPDX-License-Identifier: GPL-2.0
/* The fault matrix's libbpf filter (tests/kill_targets/target_suite.py): compiled fresh into the run's own
 * build cache, linked with the inspector, and printing, so one test goes through compile, cache write,
 * link, load, attach and printk. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int chatty(struct xdp_md *ctx)
{
	int len = ctx->data_end - ctx->data;

	bpf_printk("saw %d bytes", len);
	return len > 100 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
