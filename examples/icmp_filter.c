/* ICMP filter: echo and path-MTU signalling pass, echo requests only up to a per-source rate;
 * other ICMP, which can redirect routes or map the host (timestamps), is dropped. ICMPv6 also
 * keeps neighbor discovery, without which IPv6 does not work. Non-ICMP passes. */
#include <linux/icmp.h>
#include <linux/icmpv6.h>

#define ECHO_BUDGET 100                          /* echo requests per source per window */
#define ECHO_WINDOW_NS (60ULL * 1000000000ULL)

struct echo_src { __u8 addr[16]; };   /* IPv4 mapped as ::ffff:a.b.c.d; IPv6 by /64 */
struct echo_use { __u64 start_ns; __u64 count; };

/* LRU: a spoofed-source flood evicts old entries instead of locking out new sources. */
BPF_TABLE("lru_hash", struct echo_src, struct echo_use, echo_budget, 65536);

static __always_inline int echo_allowed(struct echo_src *src)
{
	__u64 now = bpf_ktime_get_ns();
	struct echo_use fresh = { .start_ns = now, .count = 0 };
	struct echo_use *use = echo_budget.lookup_or_try_init(src, &fresh);
	if (!use)
		return 0;
	if (now - use->start_ns > ECHO_WINDOW_NS) {
		/* CPUs racing here may both renew: at worst a few extra echoes pass. */
		use->start_ns = now;
		use->count = 0;
	}
	if (use->count >= ECHO_BUDGET)
		return 0;
	__sync_fetch_and_add(&use->count, 1);
	return 1;
}

static __always_inline int icmp4_verdict(struct iphdr *ip, void *end)
{
	/* Later fragments have no ICMP header; the first one carried it and got the verdict. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return XDP_PASS;
	struct icmphdr *icmp = (void *)ip + ip->ihl * 4;
	if ((void *)(icmp + 1) > end)
		return XDP_DROP;   /* too short to be any ICMP message we allow */
	switch (icmp->type) {
	case ICMP_ECHOREPLY:
		return XDP_PASS;
	case ICMP_DEST_UNREACH:
		/* Fragmentation needed: path MTU discovery breaks without it. */
		return icmp->code == ICMP_FRAG_NEEDED ? XDP_PASS : XDP_DROP;
	case ICMP_ECHO: {
		struct echo_src src = { .addr = { [10] = 0xff, [11] = 0xff } };
		__builtin_memcpy(&src.addr[12], &ip->saddr, 4);
		return echo_allowed(&src) ? XDP_PASS : XDP_DROP;
	}
	}
	return XDP_DROP;
}

static __always_inline int icmp6_verdict(struct ipv6hdr *ip6, void *end)
{
	struct icmp6hdr *icmp6 = (void *)(ip6 + 1);
	if ((void *)(icmp6 + 1) > end)
		return XDP_DROP;
	__u8 type = icmp6->icmp6_type;
	if (type == ICMPV6_ECHO_REPLY || type == ICMPV6_PKT_TOOBIG)
		return XDP_PASS;
	/* Router and neighbor solicitations and advertisements. A hop limit of 255 proves they were
	 * sent on this link (RFC 4861 7.1.1); 137, redirect, is dropped like other ICMP redirects. */
	if (type >= 133 && type <= 136)
		return ip6->hop_limit == 255 ? XDP_PASS : XDP_DROP;
	if (type == ICMPV6_ECHO_REQUEST) {
		/* A host owns a whole /64, so budgeting per address would give it 2^64 budgets. */
		struct echo_src src = {};
		__builtin_memcpy(src.addr, &ip6->saddr, 8);
		return echo_allowed(&src) ? XDP_PASS : XDP_DROP;
	}
	return XDP_DROP;
}

int icmp_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_ICMP || ip->ihl < 5)
			return XDP_PASS;
		return icmp4_verdict(ip, end);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		/* ICMPv6 behind extension headers (MLD behind hop-by-hop, say) is not inspected. */
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_ICMPV6)
			return XDP_PASS;
		return icmp6_verdict(ip6, end);
	}
	return XDP_PASS;
}
