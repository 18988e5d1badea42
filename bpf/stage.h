/* What the inspector of every hook shares: the per-CPU scratch record, the map accessors each
 * flavor defines next to its maps (bpf/inspector.c for bcc, inspector_libbpf.c for libbpf), counting,
 * and the frame parser. */
#ifndef PKTASSERT_STAGE_H
#define PKTASSERT_STAGE_H

/* Per-CPU scratch: the record being built and what the inspector needs after the filter returns,
 * kept there rather than on the 512-byte stack, which is the filter's. */
struct pktassert_scratch_value { struct pktassert_record r; __u32 magic; };

#ifndef PKTASSERT_CALL  /* how to call the filter's entry with our ctx */
#define PKTASSERT_CALL(ctx) PKTASSERT_FILTER(ctx)
#endif

/* Defined by each flavor next to its map declarations. */
static __always_inline __u64 *pktassert_counter_at(__u32 *key);
static __always_inline struct pktassert_scratch_value *pktassert_scratch_at(__u32 *key);
static __always_inline struct pktassert_record *pktassert_slot_at(__u32 *key);
static __always_inline long pktassert_emit(struct pktassert_record *r);

#include "parse.h"

/* *key is the one map key the inspector keeps on the stack. */
static __always_inline void pktassert_count(__u32 *key, __u32 slot)
{
	*key = slot;
	__u64 *c = pktassert_counter_at(key);
	if (c)
		*c += 1;
}

#endif
