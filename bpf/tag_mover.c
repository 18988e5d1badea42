/* pktassert's XDP stage in front of a tc ingress filter: moves each injected frame's tag from its
 * trailer into XDP metadata and passes the frame on, nothing else. It is there because the traffic
 * engine delivers through an XDP program on the DUT; the tc inspector (bpf/inspector_tc.h) takes the
 * tag from the metadata, and GRO never merges skbs whose metadata differ. */
#include <uapi/linux/bpf.h>
#include "record.h"

int pktassert_tag_mover(struct xdp_md *ctx)
{
	__u8 t[PKTASSERT_TRAILER_LEN];
	__u64 len = bpf_xdp_get_buff_len(ctx);

	if (len < PKTASSERT_TRAILER_LEN || bpf_xdp_load_bytes(ctx, len - PKTASSERT_TRAILER_LEN, t, PKTASSERT_TRAILER_LEN))
		return XDP_PASS;
	__u32 m = (__u32)t[0] << 24 | (__u32)t[1] << 16 | (__u32)t[2] << 8 | t[3];
	__u32 tag = (__u32)t[4] << 24 | (__u32)t[5] << 16 | (__u32)t[6] << 8 | t[7];
	if ((m != PKTASSERT_MAGIC_RING && m != PKTASSERT_MAGIC_ENGINE) || tag == PKTASSERT_UNTAGGED)
		return XDP_PASS;
	if (bpf_xdp_adjust_meta(ctx, -8))
		return XDP_PASS;  /* the trailer stays: the tc inspector takes it from there */
	__u32 *meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 2) > (void *)(long)ctx->data)
		return XDP_PASS;
	meta[0] = __builtin_bswap32(m);
	meta[1] = __builtin_bswap32(tag);
	bpf_xdp_adjust_tail(ctx, -PKTASSERT_TRAILER_LEN);
	return XDP_PASS;
}
