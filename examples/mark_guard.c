/* Mark guard (tc, ingress; bcc): a host behind a classifier that marks trusted traffic accepts only
 * marked packets on its service ports (22 and 8443); anything unmarked to them is dropped. Other
 * ports, and non-IP frames (ARP, ND), pass. The trusted mark is MARK_TRUSTED. */
#include <linux/tcp.h>
#include <linux/udp.h>

#define MARK_TRUSTED 0x7

static __always_inline int service_port(__u16 port)
{
	return port == 22 || port == 8443;
}

int mark_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l4;
	__u8 proto;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return TC_ACT_OK;
		proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return TC_ACT_OK;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TC_ACT_OK;
	struct udphdr *ports = l4;  /* TCP and UDP both start with the ports */
	if ((void *)(ports + 1) > end)
		return TC_ACT_OK;
	if (service_port(bpf_ntohs(ports->dest)) && skb->mark != MARK_TRUSTED)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
