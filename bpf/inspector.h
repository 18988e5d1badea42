/* pktassert XDP inspector: the part both loaders share (bpf/inspector.c for bcc sources,
 * bpf/inspector_libbpf.c for libbpf sources and objects). For every frame: take the tag off the
 * trailer, parse L2-L4, call the filter, record its verdict, then count it exactly.
 * Before this header: record.h, PKTASSERT_FILTER (the filter's entry) and the four map accessors
 * pktassert_counter_at, pktassert_scratch_at, pktassert_slot_at and pktassert_emit. */
#ifndef PKTASSERT_INSPECTOR_H
#define PKTASSERT_INSPECTOR_H

/* Per-CPU scratch: the record being built and what the inspector needs after the filter returns,
 * kept there rather than on the 512-byte stack, which is the filter's. */
struct pktassert_scratch_value { struct pktassert_record r; __u32 magic; };

#ifndef PKTASSERT_PARSE  /* bcc: inlined (bcc cannot call global functions); libbpf: see inspector_libbpf.c */
#define PKTASSERT_PARSE(ctx, r) pktassert_parse(ctx, r)
#endif

#ifndef PKTASSERT_CALL  /* how to call the filter's entry with our ctx */
#define PKTASSERT_CALL(ctx) PKTASSERT_FILTER(ctx)
#endif

/* Defined by each flavor next to its map declarations. */
static __always_inline __u64 *pktassert_counter_at(__u32 *key);
static __always_inline struct pktassert_scratch_value *pktassert_scratch_at(__u32 *key);
static __always_inline struct pktassert_record *pktassert_slot_at(__u32 *key);
static __always_inline long pktassert_emit(struct pktassert_record *r);

/* BPF here is little-endian like its host (bcc compiles for the host). */
#define pktassert_ntohs(x) __builtin_bswap16(x)

struct pktassert_vlan { __be16 tci; __be16 proto; };

/* *key is the one map key the inspector keeps on the stack. */
static __always_inline void pktassert_count(__u32 *key, __u32 slot)
{
	*key = slot;
	__u64 *c = pktassert_counter_at(key);
	if (c)
		*c += 1;
}

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

static __always_inline void pktassert_parse_l4(struct pktassert_record *r, void *l4, void *end)
{
	__u8 *p = l4;
	if (r->proto == IPPROTO_TCP) {
		if ((void *)(p + 14) > end)
			goto truncated;
		r->tcp_flags = p[13];
	} else if (r->proto == IPPROTO_UDP) {
		if ((void *)(p + 4) > end)
			goto truncated;
	} else if (r->proto == IPPROTO_ICMP || r->proto == IPPROTO_ICMPV6) {
		if ((void *)(p + 2) > end)
			goto truncated;
		r->icmp_type = p[0];
		r->icmp_code = p[1];
		r->parsed |= PKTASSERT_P_L4;
		return;
	} else {
		return;
	}
	r->sport = (__u16)p[0] << 8 | p[1];
	r->dport = (__u16)p[2] << 8 | p[3];
	r->parsed |= PKTASSERT_P_L4;
	return;
truncated:
	r->parsed |= PKTASSERT_P_TRUNCATED;
}

static __always_inline void pktassert_parse(struct xdp_md *ctx, struct pktassert_record *r)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	r->len = bpf_xdp_get_buff_len(ctx);  /* fragments included */
	r->ifindex = ctx->ingress_ifindex;
	if ((void *)(eth + 1) > end) {
		r->parsed |= PKTASSERT_P_TRUNCATED;
		return;
	}
	r->parsed |= PKTASSERT_P_L2;
	__be16 proto = eth->h_proto;
	void *cur = eth + 1;

#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (i == 2) {
			r->parsed |= PKTASSERT_P_VLAN_MORE;
			break;
		}
		struct pktassert_vlan *v = cur;
		if ((void *)(v + 1) > end) {
			r->ethertype = pktassert_ntohs(proto);
			r->parsed |= PKTASSERT_P_TRUNCATED;
			return;
		}
		if (i == 0)
			r->vlan_outer = pktassert_ntohs(v->tci) & 0x0fff;
		else
			r->vlan_inner = pktassert_ntohs(v->tci) & 0x0fff;
		r->vlan_count++;
		proto = v->proto;
		cur = v + 1;
	}
	r->ethertype = pktassert_ntohs(proto);
	if (r->parsed & PKTASSERT_P_VLAN_MORE)
		return;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > end) {
			r->parsed |= PKTASSERT_P_TRUNCATED;
			return;
		}
		r->l3 = 4;
		r->proto = ip->protocol;
		r->ttl = ip->ttl;
		__builtin_memcpy(r->src, &ip->saddr, 4);
		__builtin_memcpy(r->dst, &ip->daddr, 4);
		r->parsed |= PKTASSERT_P_L3;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip)) {
			r->parsed |= PKTASSERT_P_TRUNCATED;
			return;
		}
		if (ip->frag_off & bpf_htons(0x1fff)) {
			r->parsed |= PKTASSERT_P_FRAGMENT;
			return;
		}
		pktassert_parse_l4(r, cur + ihl, end);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > end) {
			r->parsed |= PKTASSERT_P_TRUNCATED;
			return;
		}
		r->l3 = 6;
		r->ttl = ip6->hop_limit;
		__builtin_memcpy(r->src, &ip6->saddr, 16);
		__builtin_memcpy(r->dst, &ip6->daddr, 16);
		r->parsed |= PKTASSERT_P_L3;
		__u8 nh = ip6->nexthdr;
		__u8 *h = (__u8 *)(ip6 + 1);
		/* Walk at most six extension headers: hop-by-hop, routing, destination, fragment, AH. */
#pragma unroll
		for (int i = 0; i < 6; i++) {
			if (nh != 0 && nh != 43 && nh != 44 && nh != 51 && nh != 60)
				break;
			if ((void *)(h + 8) > end) {
				r->proto = nh;
				r->parsed |= PKTASSERT_P_TRUNCATED;
				return;
			}
			if (nh == 44 && ((__u16)h[2] << 8 | h[3]) & 0xfff8) {
				r->proto = h[0];
				r->parsed |= PKTASSERT_P_FRAGMENT;
				return;
			}
			__u32 hlen = nh == 44 ? 8 : nh == 51 ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
			nh = h[0];
			h += hlen;
		}
		r->proto = nh;
		pktassert_parse_l4(r, h, end);
	}
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

static __always_inline int pktassert_inspect(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct pktassert_scratch_value *s = pktassert_scratch_at(&key);

	if (!s)
		return XDP_ABORTED; /* cannot happen: a one-slot per-CPU array always has slot 0 */
	__u32 tag = pktassert_take_tag(ctx, s);
	struct pktassert_record *r = &s->r;
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->tag = tag;
	r->verdict = PKTASSERT_PENDING;
	PKTASSERT_PARSE(ctx, r);

	/* Slot records are written before the filter runs: one that leaves through a tail call
	 * keeps PENDING there, and the test run's return value tells its verdict (unit tier). */
	if (s->magic == PKTASSERT_MAGIC_UNIT || s->magic == PKTASSERT_MAGIC_ENGINE) {
		key = tag % PKTASSERT_SLOTS;
		struct pktassert_record *slot = pktassert_slot_at(&key);
		if (slot)
			__builtin_memcpy(slot, r, sizeof(*r));
	}
	if (tag != PKTASSERT_UNTAGGED)
		pktassert_count(&key, PKTASSERT_CTR_ENTERED);

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
	/* The record first, then the count: a reader that sees the count finds the record. */
	if (s->magic == PKTASSERT_MAGIC_UNIT || s->magic == PKTASSERT_MAGIC_ENGINE) {
		key = r->tag % PKTASSERT_SLOTS;
		struct pktassert_record *slot = pktassert_slot_at(&key);
		if (slot) {
			slot->ret = ret;
			slot->note = r->note;
			slot->verdict = action;
		}
	} else if (r->tag != PKTASSERT_UNTAGGED && pktassert_emit(r)) {
		pktassert_count(&key, PKTASSERT_CTR_LOST);
	}
	__u32 group = r->tag == PKTASSERT_UNTAGGED ? PKTASSERT_CTR_STRAY : PKTASSERT_CTR_TAGGED;
	pktassert_count(&key, group + ((__u32)ret <= XDP_REDIRECT ? (__u32)ret : PKTASSERT_CTR_INVALID));
	return ret;
}

#endif
