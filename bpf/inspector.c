/* pktassert XDP inspector, compiled after the filter's own source (see bpf/program.py).
 * For every frame: take the tag off the trailer, parse L2-L4, call the filter (inlined),
 * count its verdict exactly, and emit one struct pa_record through the ring buffer. */

BPF_RINGBUF_OUTPUT(pa_events, PA_RING_PAGES);
BPF_PERCPU_ARRAY(pa_counters, __u64, PA_CTR_SLOTS);
/* Per-CPU scratch record: keeps our 80 bytes off the 512-byte stack the filter shares with us. */
BPF_PERCPU_ARRAY(pa_scratch, struct pa_record, 1);
BPF_F_TABLE("array", __u32, struct pa_record, pa_unit, PA_UNIT_SLOTS, BPF_F_MMAPABLE);

/* BPF here is little-endian like its host (bcc compiles for the host). */
#define pa_ntohs(x) __builtin_bswap16(x)

struct pa_vlan { __be16 tci; __be16 proto; };

static __always_inline void pa_count(__u32 slot)
{
	__u64 *c = pa_counters.lookup(&slot);
	if (c)
		*c += 1;
}

/* The tag, or PA_UNTAGGED; *unit is set when the frame came from a unit run. */
static __always_inline __u32 pa_take_tag(struct xdp_md *ctx, int *unit)
{
	/* Through the helpers, not packet pointers: in a unit run a frame over a page ends in a
	 * fragment, where the trailer is beyond data_end. */
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u8 t[PA_TRAILER_LEN];

	if (len < PA_TRAILER_LEN || bpf_xdp_load_bytes(ctx, len - PA_TRAILER_LEN, t, PA_TRAILER_LEN))
		return PA_UNTAGGED;
	__u32 magic = (__u32)t[0] << 24 | (__u32)t[1] << 16 | (__u32)t[2] << 8 | t[3];
	__u32 tag = (__u32)t[4] << 24 | (__u32)t[5] << 16 | (__u32)t[6] << 8 | t[7];
	if ((magic != PA_TAG_MAGIC && magic != PA_UNIT_MAGIC) || tag == PA_UNTAGGED)
		return PA_UNTAGGED;
	if (bpf_xdp_adjust_tail(ctx, -PA_TRAILER_LEN))
		return PA_UNTAGGED;
	*unit = magic == PA_UNIT_MAGIC;
	return tag;
}

static __always_inline void pa_parse_l4(struct pa_record *r, void *l4, void *end)
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
		r->parsed |= PA_P_L4;
		return;
	} else {
		return;
	}
	r->sport = (__u16)p[0] << 8 | p[1];
	r->dport = (__u16)p[2] << 8 | p[3];
	r->parsed |= PA_P_L4;
	return;
truncated:
	r->parsed |= PA_P_TRUNCATED;
}

static __always_inline void pa_parse(struct xdp_md *ctx, struct pa_record *r)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	r->len = bpf_xdp_get_buff_len(ctx);  /* fragments included */
	r->ifindex = ctx->ingress_ifindex;
	if ((void *)(eth + 1) > end) {
		r->parsed |= PA_P_TRUNCATED;
		return;
	}
	r->parsed |= PA_P_L2;
	__be16 proto = eth->h_proto;
	void *cur = eth + 1;

#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (i == 2) {
			r->parsed |= PA_P_VLAN_MORE;
			break;
		}
		struct pa_vlan *v = cur;
		if ((void *)(v + 1) > end) {
			r->ethertype = pa_ntohs(proto);
			r->parsed |= PA_P_TRUNCATED;
			return;
		}
		if (i == 0)
			r->vlan_outer = pa_ntohs(v->tci) & 0x0fff;
		else
			r->vlan_inner = pa_ntohs(v->tci) & 0x0fff;
		r->vlan_count++;
		proto = v->proto;
		cur = v + 1;
	}
	r->ethertype = pa_ntohs(proto);
	if (r->parsed & PA_P_VLAN_MORE)
		return;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > end) {
			r->parsed |= PA_P_TRUNCATED;
			return;
		}
		r->l3 = 4;
		r->proto = ip->protocol;
		r->ttl = ip->ttl;
		__builtin_memcpy(r->src, &ip->saddr, 4);
		__builtin_memcpy(r->dst, &ip->daddr, 4);
		r->parsed |= PA_P_L3;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip)) {
			r->parsed |= PA_P_TRUNCATED;
			return;
		}
		if (ip->frag_off & bpf_htons(0x1fff)) {
			r->parsed |= PA_P_FRAGMENT;
			return;
		}
		pa_parse_l4(r, cur + ihl, end);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > end) {
			r->parsed |= PA_P_TRUNCATED;
			return;
		}
		r->l3 = 6;
		r->ttl = ip6->hop_limit;
		__builtin_memcpy(r->src, &ip6->saddr, 16);
		__builtin_memcpy(r->dst, &ip6->daddr, 16);
		r->parsed |= PA_P_L3;
		__u8 nh = ip6->nexthdr;
		__u8 *h = (__u8 *)(ip6 + 1);
		/* Walk at most six extension headers: hop-by-hop, routing, destination, fragment, AH. */
#pragma unroll
		for (int i = 0; i < 6; i++) {
			if (nh != 0 && nh != 43 && nh != 44 && nh != 51 && nh != 60)
				break;
			if ((void *)(h + 8) > end) {
				r->proto = nh;
				r->parsed |= PA_P_TRUNCATED;
				return;
			}
			if (nh == 44 && ((__u16)h[2] << 8 | h[3]) & 0xfff8) {
				r->proto = h[0];
				r->parsed |= PA_P_FRAGMENT;
				return;
			}
			__u32 hlen = nh == 44 ? 8 : nh == 51 ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
			nh = h[0];
			h += hlen;
		}
		r->proto = nh;
		pa_parse_l4(r, h, end);
	}
}

int pktassert_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	int unit = 0;
	__u32 tag = pa_take_tag(ctx, &unit);
	struct pa_record *r = pa_scratch.lookup(&zero);

	if (!r)
		return XDP_ABORTED; /* cannot happen: a one-slot per-CPU array always has slot 0 */
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->tag = tag;
	pa_parse(ctx, r);

	int verdict = PA_FILTER(ctx);

	r->verdict = verdict;
	pa_count(verdict >= 0 && verdict < PA_CTR_VERDICTS ? verdict : PA_CTR_INVALID);
	if (tag == PA_UNTAGGED)
		pa_count(PA_CTR_UNTAGGED);
	if (unit) {
		__u32 slot = tag % PA_UNIT_SLOTS;
		struct pa_record *u = pa_unit.lookup(&slot);
		if (u)
			__builtin_memcpy(u, r, sizeof(*r));
	} else if (pa_events.ringbuf_output(r, sizeof(*r), 0)) {
		pa_count(PA_CTR_LOST);
	}
	return verdict;
}

/* The filter alone, for cost(): the same maps, none of our work. */
int pktassert_bare(struct xdp_md *ctx)
{
	return PA_FILTER(ctx);
}
