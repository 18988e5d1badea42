/* pktassert's traffic engine, run by BPF_PROG_TEST_RUN in live-frames mode inside the peer
 * namespace (as xdp-trafficgen does). Run k copies frame k from the arena (filled by Python
 * through mmap) into the frame and sends it out of the peer's veth (XDP_TX), so the DUT gets
 * it through its real veth and XDP receive path. */
#include <uapi/linux/bpf.h>

#define PA_TX_ARENA_BYTES (1 << 22)   /* the largest value an array map takes (KMALLOC_MAX_SIZE) */
#define PA_TX_MAX 2048                /* longest frame, trailer included; a power of two */

/* Frames back to back; none straddles two arena values. */
struct pa_tx_arena_value { __u8 bytes[PA_TX_ARENA_BYTES]; };
BPF_F_TABLE("array", __u32, struct pa_tx_arena_value, pa_tx_arena, PA_TX_ARENAS, BPF_F_MMAPABLE);
/* Per frame: arena << 40 | offset << 16 | length. */
BPF_F_TABLE("array", __u32, __u64, pa_tx_index, PA_TX_FRAMES, BPF_F_MMAPABLE);
/* [0]: the next frame (Python sets 0 before a run); [1]: frames sent; [2]: frames refused. */
BPF_F_TABLE("array", __u32, __u64, pa_tx_state, 4, BPF_F_MMAPABLE);

static __always_inline void pa_tx_count(__u32 slot)
{
	__u64 *c = pa_tx_state.lookup(&slot);
	if (c)
		*c += 1;
}

int pktassert_send(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *next = pa_tx_state.lookup(&zero);
	if (!next)
		return XDP_ABORTED;
	__u32 k = *next % PA_TX_FRAMES;
	*next += 1;
	__u64 *entry = pa_tx_index.lookup(&k);
	if (!entry)
		return XDP_ABORTED;
	__u32 arena = *entry >> 40, off = (*entry >> 16) & 0xffffff, len = *entry & 0xffff;
	struct pa_tx_arena_value *a = pa_tx_arena.lookup(&arena);
	__u8 *base = a ? a->bytes : 0;
	if (!base || len < 14 || len > PA_TX_MAX || off > PA_TX_ARENA_BYTES - PA_TX_MAX)
		goto refuse;
	if (bpf_xdp_adjust_tail(ctx, (int)len - (int)bpf_xdp_get_buff_len(ctx)))
		goto refuse;
	if (bpf_xdp_store_bytes(ctx, 0, base + off, ((len - 1) & (PA_TX_MAX - 1)) + 1))
		goto refuse;
	pa_tx_count(1);
	return XDP_TX;
refuse:
	pa_tx_count(2);
	return XDP_DROP;
}
