/* SYN-flood guard: each source may open at most SYN_BUDGET connections to a protected port;
 * further SYNs from that source are dropped. Everything else passes. */
#include <linux/tcp.h>

#define PROTECTED_PORT 80
#define SYN_BUDGET 64

BPF_HASH(syn_budget, __u32, __u64, 65536);   /* IPv4 source -> SYNs seen */

int syn_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > end)
		return XDP_PASS;
	if (!tcp->syn || tcp->ack || tcp->dest != bpf_htons(PROTECTED_PORT))
		return XDP_PASS;

	__u32 src = ip->saddr;
	__u64 zero = 0, *seen = syn_budget.lookup_or_try_init(&src, &zero);
	if (!seen)
		return XDP_DROP;   /* table full: fail closed */
	if (*seen >= SYN_BUDGET)
		return XDP_DROP;
	__sync_fetch_and_add(seen, 1);
	return XDP_PASS;
}
