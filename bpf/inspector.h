/* pktassert XDP inspector: the part both loaders share (bpf/inspector.c for bcc sources,
 * bpf/inspector_libbpf.c for libbpf sources and objects). For every frame: take the tag off the
 * trailer, parse L2-L4, call the filter, record its verdict, then count it exactly.
 * Before this header: record.h and PKTASSERT_FILTER (the filter's entry); the flavor defines the
 * map accessors stage.h declares. */
#ifndef PKTASSERT_INSPECTOR_H
#define PKTASSERT_INSPECTOR_H

#include "stage.h"

#ifndef PKTASSERT_PARSE  /* bcc: inlined (bcc cannot call global functions); libbpf: see inspector_libbpf.c */
#define PKTASSERT_PARSE(ctx, r) pktassert_parse(ctx, r)
#endif

/* The tag, or PKTASSERT_UNTAGGED; s->magic is set to the trailer's magic. */
static __always_inline __u32 pktassert_take_tag(struct xdp_md *ctx, struct pktassert_scratch_value *s)
{
	/* Through the helpers, not packet pointers: in a unit run a frame over a page ends in a
	 * fragment, where the trailer is beyond data_end. Read into the scratch record, not the stack. */
	__u64 len = bpf_xdp_get_buff_len(ctx);

	s->magic = 0;
	if (len < PKTASSERT_TRAILER_LEN || bpf_xdp_load_bytes(ctx, len - PKTASSERT_TRAILER_LEN, s->r.src, PKTASSERT_TRAILER_LEN))
		return PKTASSERT_UNTAGGED;
	__u32 m = (__u32)s->r.src[0] << 24 | (__u32)s->r.src[1] << 16 | (__u32)s->r.src[2] << 8 | s->r.src[3];
	__u32 tag = (__u32)s->r.src[4] << 24 | (__u32)s->r.src[5] << 16 | (__u32)s->r.src[6] << 8 | s->r.src[7];
	if ((m != PKTASSERT_MAGIC_RING && m != PKTASSERT_MAGIC_UNIT && m != PKTASSERT_MAGIC_ENGINE)
	    || tag == PKTASSERT_UNTAGGED)
		return PKTASSERT_UNTAGGED;
	if (bpf_xdp_adjust_tail(ctx, -PKTASSERT_TRAILER_LEN))
		return PKTASSERT_UNTAGGED;
	s->magic = m;
	return tag;
}



static __always_inline void pktassert_parse(struct xdp_md *ctx, struct pktassert_record *r)
{
	r->len = bpf_xdp_get_buff_len(ctx);  /* fragments included */
	r->ifindex = ctx->ingress_ifindex;
	pktassert_parse_bytes((void *)(long)ctx->data, (void *)(long)ctx->data_end, r);
}

/* Frames sent out of the DUT (TX, REDIRECT) in the live tier: the tag goes into XDP metadata,
 * which crosses the veth with the frame without being part of it. */
static __always_inline void pktassert_tag_out(struct xdp_md *ctx, struct pktassert_record *r)
{
	if (bpf_xdp_adjust_meta(ctx, -8)) {
		r->note |= PKTASSERT_N_OUT_UNTAGGED;
		return;
	}
	__u32 *meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 2) > (void *)(long)ctx->data) {
		r->note |= PKTASSERT_N_OUT_UNTAGGED;
		return;
	}
	meta[0] = __builtin_bswap32(PKTASSERT_MAGIC_OUT);
	meta[1] = __builtin_bswap32(r->tag);
}

/* Frames passed to the stack in the live tier get their trailer [magic, tag] back, for what comes
 * after: a tc stage (bpf/inspector_tc.h cuts it off before the tc filter runs) and the fate tracker.
 * Not XDP metadata: that is the filter's own, for its own tc program, which must see exactly what it
 * would without pktassert. IP input trims the trailer (it lies beyond the IP total length), and GRO
 * never merges frames whose length differs from their IP header's. */
static __always_inline void pktassert_tag_pass(struct xdp_md *ctx, struct pktassert_scratch_value *s)
{
	__u64 len = bpf_xdp_get_buff_len(ctx);
	if (bpf_xdp_adjust_tail(ctx, PKTASSERT_TRAILER_LEN))
		return;
	s->trailer[0] = __builtin_bswap32(s->magic);
	s->trailer[1] = __builtin_bswap32(s->r.tag);
	bpf_xdp_store_bytes(ctx, len, s->trailer, PKTASSERT_TRAILER_LEN);
}

static __always_inline int pktassert_inspect(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct pktassert_scratch_value *s = pktassert_scratch_at(&key);

	if (!s)
		return XDP_ABORTED; /* cannot happen: a one-slot per-CPU array always has slot 0 */
	__u32 tag = pktassert_take_tag(ctx, s);
	struct pktassert_record *r = pktassert_start(s, tag);
	PKTASSERT_PARSE(ctx, r);
	pktassert_entered(s, &key);

	int ret = PKTASSERT_CALL(ctx);

	/* Everything else comes back from the scratch: nothing of ours stays on the stack meanwhile. */
	key = 0;
	s = pktassert_scratch_at(&key);
	if (!s)
		return ret;
	r = &s->r;
	/* What the kernel does with a value that is not an XDP action: drops the frame as an exception. */
	__u32 action = (__u32)ret <= XDP_REDIRECT ? (__u32)ret : XDP_ABORTED;
	r->ret = ret;
	r->verdict = action;
	if ((action == XDP_TX || action == XDP_REDIRECT) && s->magic != PKTASSERT_MAGIC_UNIT && r->tag != PKTASSERT_UNTAGGED)
		pktassert_tag_out(ctx, r);
	else if (action == XDP_PASS && s->magic != PKTASSERT_MAGIC_UNIT && r->tag != PKTASSERT_UNTAGGED)
		pktassert_tag_pass(ctx, s);
	pktassert_finish(s, &key, (__u32)ret <= XDP_REDIRECT ? (__u32)ret : PKTASSERT_CTR_INVALID);
	return ret;
}

#endif
