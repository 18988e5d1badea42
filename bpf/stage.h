/* What the inspector of every hook shares: the per-CPU scratch record, the map accessors each
 * flavor defines next to its maps (bpf/inspector.c for bcc, inspector_libbpf.c for libbpf), counting,
 * and the frame parser. */
#ifndef PKTASSERT_STAGE_H
#define PKTASSERT_STAGE_H

/* Per-CPU scratch: the record being built and what the inspector needs after the filter returns,
 * kept there rather than on the 512-byte stack, which is the filter's. */
/* printk_nonce: set by Python (every CPU) when the filter prints; see pktassert_entered. trailer: the
 * bytes an XDP stage gives a passed frame back (bpf/inspector.h), built here, not on the stack. */
struct pktassert_scratch_value { struct pktassert_record r; __u32 magic; __u32 printk_nonce; __u32 trailer[2]; __u32 egress; __u32 pad; };

#ifndef PKTASSERT_CALL  /* how to call the filter's entry with our ctx */
#define PKTASSERT_CALL(ctx) PKTASSERT_FILTER(ctx)
#endif

/* Defined by each flavor next to its map declarations. */
static __always_inline __u64 *pktassert_counter_at(__u32 *key);
static __always_inline struct pktassert_scratch_value *pktassert_scratch_at(__u32 *key);
static __always_inline struct pktassert_record *pktassert_slot_at(__u32 *key);
static __always_inline long pktassert_emit(struct pktassert_record *r);
#ifdef PKTASSERT_PRINTK
static __always_inline void pktassert_mark(__u32 nonce, __u32 tag);
#endif

#include "parse.h"

/* *key is the one map key the inspector keeps on the stack. */
static __always_inline void pktassert_count(__u32 *key, __u32 slot)
{
	*key = slot;
	__u64 *c = pktassert_counter_at(key);
	if (c)
		*c += 1;
}

/* Before the filter runs: the record begun (the hook parses the frame into it next). */
static __always_inline struct pktassert_record *pktassert_start(struct pktassert_scratch_value *s, __u32 tag)
{
	struct pktassert_record *r = &s->r;
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->tag = tag;
	r->verdict = PKTASSERT_PENDING;
	return r;
}

static __always_inline int pktassert_to_slots(struct pktassert_scratch_value *s)
{
	return s->magic == PKTASSERT_MAGIC_UNIT || s->magic == PKTASSERT_MAGIC_ENGINE;
}

/* Slot records are written before the filter runs: one that leaves through a tail call keeps
 * PENDING there, and the test run's return value tells its verdict (unit tier). */
static __always_inline void pktassert_entered(struct pktassert_scratch_value *s, __u32 *key)
{
	struct pktassert_record *r = &s->r;
#ifdef PKTASSERT_PRINTK
	/* A filter that prints (bpf_printk): a line of ours first, so that each of its lines can be tied
	 * to the packet it printed for, on the CPU that ran it. Only for such filters: the helper is
	 * GPL-only and costs a microsecond. */
	if (s->printk_nonce)
		pktassert_mark(s->printk_nonce, r->tag);
#endif
	if (pktassert_to_slots(s)) {
		*key = r->tag % PKTASSERT_SLOTS;
		struct pktassert_record *slot = pktassert_slot_at(key);
		if (slot)
			__builtin_memcpy(slot, r, sizeof(*r));
	}
	if (r->tag != PKTASSERT_UNTAGGED)
		pktassert_count(key, PKTASSERT_CTR_ENTERED);
}

/* After the filter, with r->ret and r->verdict set: the record first (its slot, or the ring), then
 * the count in counter ``slot`` of the frame's group: a reader that sees the count finds the record. */
static __always_inline void pktassert_finish(struct pktassert_scratch_value *s, __u32 *key, __u32 slot_in_group)
{
	struct pktassert_record *r = &s->r;
	if (pktassert_to_slots(s)) {
		*key = r->tag % PKTASSERT_SLOTS;
		struct pktassert_record *slot = pktassert_slot_at(key);
		if (slot) {
			slot->ret = r->ret;
			slot->note = r->note;
			slot->verdict = r->verdict;
		}
	} else if (r->tag != PKTASSERT_UNTAGGED && pktassert_emit(r)) {
		pktassert_count(key, PKTASSERT_CTR_LOST);
	}
	__u32 group = r->tag == PKTASSERT_UNTAGGED ? PKTASSERT_CTR_STRAY : PKTASSERT_CTR_TAGGED;
	pktassert_count(key, group + slot_in_group);
}

#endif
