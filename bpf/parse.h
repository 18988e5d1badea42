/* pktassert's frame parser, the same for every hook: L2 (VLAN tags), IPv4/IPv6 (extension headers),
 * TCP/UDP ports and flags, ICMP type and code, into struct pktassert_record (record.h). */
#ifndef PKTASSERT_PARSE_H
#define PKTASSERT_PARSE_H

/* BPF here is little-endian like its host (bcc compiles for the host). */
#define pktassert_ntohs(x) __builtin_bswap16(x)

struct pktassert_vlan { __be16 tci; __be16 proto; };

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

/* L2-L4 of the frame in [data, end) into r (the caller sets len and ifindex). */
static __always_inline void pktassert_parse_bytes(void *data, void *end, struct pktassert_record *r)
{
	struct ethhdr *eth = data;

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

#endif
