/* pktassert tc inspector (sched_cls, direct action), the part both loaders share: for every skb,
 * take its tag, parse L2-L4, call the filter, record the action the kernel takes, count it.
 * Before this header: record.h and PKTASSERT_FILTER; the flavor defines stage.h's map accessors
 * and pktassert_tc_opts_at. Where the tag comes from:
 *  - egress, frames the DUT sends: skb->priority is PKTASSERT_MAGIC_EGRESS and skb->mark the tag;
 *    the filter gets the mark and priority the test chose instead;
 *  - otherwise (ingress: live behind our XDP stage, which gives it back after the XDP filter; the unit
 *    tier) the trailer, cut off before the filter: the filter sees the frame as sent, and XDP metadata
 *    only if the XDP filter under test wrote it. */
#ifndef PKTASSERT_INSPECTOR_TC_H
#define PKTASSERT_INSPECTOR_TC_H

#include "stage.h"

#ifndef PKTASSERT_PARSE_SKB
#define PKTASSERT_PARSE_SKB(skb, r) pktassert_parse_skb(skb, r)
#endif

struct pktassert_tc_opts { __u32 mark; __u32 priority; };
static __always_inline struct pktassert_tc_opts *pktassert_tc_opts_at(__u32 *key);

static __always_inline void pktassert_parse_skb(struct __sk_buff *skb, struct pktassert_record *r)
{
	r->len = skb->len;
	r->ifindex = skb->ifindex;
	pktassert_parse_bytes((void *)(long)skb->data, (void *)(long)skb->data_end, r);
	/* On a real receive path the kernel takes the outer VLAN tag out of the frame into the sk_buff
	 * before tc (skb_vlan_untag); a test run leaves it in. Record it the same either way. */
	if (!skb->vlan_present)
		return;
	r->len += 4;
	if (r->vlan_count < 2) {
		r->vlan_inner = r->vlan_outer;
		r->vlan_outer = skb->vlan_tci & 0x0fff;
		r->vlan_count++;
		return;
	}
	/* Two more tags in the frame: three in all, more than the parser follows. A test run stops after the
	 * second (P_VLAN_MORE, the third tag's TPID as ethertype, nothing of L3/L4): so does the record here. */
	__u8 *data = (void *)(long)skb->data;
	__u16 tpid = 0;
	if ((void *)(data + 18) <= (void *)(long)skb->data_end)
		tpid = (__u16)data[16] << 8 | data[17];   /* the first in-frame tag's next protocol */
	r->vlan_inner = r->vlan_outer;
	r->vlan_outer = skb->vlan_tci & 0x0fff;
	r->ethertype = tpid;
	r->parsed = PKTASSERT_P_L2 | PKTASSERT_P_VLAN_MORE;
	/* nothing of what was parsed past the second tag stays */
	r->l3 = r->proto = r->ttl = r->tcp_flags = r->icmp_type = r->icmp_code = 0;
	r->sport = r->dport = 0;
	__builtin_memset(r->src, 0, sizeof(r->src));
	__builtin_memset(r->dst, 0, sizeof(r->dst));
}

static __always_inline __u32 pktassert_be32(__u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __always_inline __u32 pktassert_tc_tag(struct __sk_buff *skb, struct pktassert_scratch_value *s, __u32 *key)
{
	s->magic = 0;
	s->egress = 0;
	if (skb->priority == PKTASSERT_MAGIC_EGRESS) {
		__u32 tag = skb->mark;
		*key = 0;
		struct pktassert_tc_opts *o = pktassert_tc_opts_at(key);
		skb->mark = o ? o->mark : 0;
		skb->priority = o ? o->priority : 0;
		if (tag == PKTASSERT_UNTAGGED)
			return PKTASSERT_UNTAGGED;
		s->magic = PKTASSERT_MAGIC_RING;
		s->egress = 1;
		return tag;
	}
	__u32 len = skb->len;
	if (len < PKTASSERT_TRAILER_LEN || bpf_skb_load_bytes(skb, len - PKTASSERT_TRAILER_LEN, s->r.src, PKTASSERT_TRAILER_LEN))
		return PKTASSERT_UNTAGGED;
	__u32 m = pktassert_be32(s->r.src), tag = pktassert_be32(s->r.src + 4);
	if ((m != PKTASSERT_MAGIC_RING && m != PKTASSERT_MAGIC_UNIT && m != PKTASSERT_MAGIC_ENGINE)
	    || tag == PKTASSERT_UNTAGGED)
		return PKTASSERT_UNTAGGED;
	if (bpf_skb_change_tail(skb, len - PKTASSERT_TRAILER_LEN, 0))
		return PKTASSERT_UNTAGGED;
	s->magic = m;
	return tag;
}

/* What the kernel does with a direct-action classifier's return value (cls_bpf_exec_opcode):
 * these act, anything else is TC_ACT_UNSPEC (the next filter, and with none, the packet goes on). */
static __always_inline int pktassert_tc_action(int ret)
{
	switch (ret) {
	case TC_ACT_UNSPEC:
	case TC_ACT_OK:
	case TC_ACT_SHOT:
	case TC_ACT_STOLEN:
	case TC_ACT_REDIRECT:
	case TC_ACT_TRAP:
		return ret;
	}
	return TC_ACT_UNSPEC;
}

static __always_inline int pktassert_inspect_tc(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct pktassert_scratch_value *s = pktassert_scratch_at(&key);

	if (!s)
		return TC_ACT_OK; /* cannot happen: a one-slot per-CPU array always has slot 0 */
	__u32 tag = pktassert_tc_tag(skb, s, &key);
	struct pktassert_record *r = pktassert_start(s, tag);
	PKTASSERT_PARSE_SKB(skb, r);
	pktassert_entered(s, &key);

	int ret = PKTASSERT_CALL(skb);

	key = 0;
	s = pktassert_scratch_at(&key);
	if (!s)
		return ret;
	r = &s->r;
	int action = pktassert_tc_action(ret);
	r->ret = ret;
	r->verdict = (__u32)action;
	if (s->egress && action != TC_ACT_SHOT && action != TC_ACT_STOLEN) {
		/* After the filter (it never sees these), for the fate tracker at the driver: the control
		 * block is scratch for tc; nothing of the DUT's reads it past tc egress on a noqueue veth. */
		skb->cb[0] = PKTASSERT_MAGIC_SENT;
		skb->cb[1] = tag;
	}	pktassert_finish(s, &key, (__u32)(action + 1));  /* TC_ACT_UNSPEC (-1) counts in slot 0 */
	return ret;
}

#endif
