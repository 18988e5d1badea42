// SPDX-License-Identifier: GPL-2.0
/* Drops a frame when the byte of a 64-byte table row at index (frame length) is set, for frames
 * shorter than a limit drawn per frame. The bound on the index comes from comparing it with another
 * unknown register (i < limit): verifiers from Linux 6.8 learn bounds from such register-to-register
 * comparisons and accept this; older ones (Debian 12's 6.1) learn nothing there and reject the
 * table access as unbounded. The same source, two kernels, two answers. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct row {
	__u8 bytes[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct row);
} table SEC(".maps");

SEC("xdp")
int row_lookup(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct row *row = bpf_map_lookup_elem(&table, &zero);
	if (!row)
		return XDP_PASS;
	__u32 limit = bpf_get_prandom_u32() & 63;	/* 0..63 */
	__u32 i = ctx->data_end - ctx->data;		/* the frame's length: unknown */
	if (i < limit)
		return row->bytes[i] ? XDP_DROP : XDP_PASS;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
