/* pktassert inspector for bcc sources, compiled BEFORE the filter's own source (see
 * pktassert/programs/bcc_program.py), so that no macro of the filter's can change it. The work is in inspector.h
 * (XDP) and inspector_tc.h (tc, when program.py defines PKTASSERT_HOOK_TC).
 * PKTASSERT_FILTER names the filter's entry function; program.py defines it for this part only. */

#ifdef PKTASSERT_HOOK_TC
#include "inspector_tc.h"
#else
#include "inspector.h"
#endif

BPF_RINGBUF_OUTPUT(pktassert_events, PKTASSERT_RING_PAGES);
BPF_PERCPU_ARRAY(pktassert_counters, __u64, PKTASSERT_CTR_SLOTS);
BPF_PERCPU_ARRAY(pktassert_scratch, struct pktassert_scratch_value, 1);
BPF_F_TABLE("array", __u32, struct pktassert_record, pktassert_slots, PKTASSERT_SLOTS, BPF_F_MMAPABLE);

static __always_inline __u64 *pktassert_counter_at(__u32 *key) { return pktassert_counters.lookup(key); }
static __always_inline struct pktassert_scratch_value *pktassert_scratch_at(__u32 *key) { return pktassert_scratch.lookup(key); }
static __always_inline struct pktassert_record *pktassert_slot_at(__u32 *key) { return pktassert_slots.lookup(key); }
static __always_inline long pktassert_emit(struct pktassert_record *r) { return pktassert_events.ringbuf_output(r, sizeof(*r), 0); }
#ifdef PKTASSERT_PRINTK
static __always_inline void pktassert_mark(__u32 nonce, __u32 tag) { bpf_trace_printk("pktassert %u %u\n", nonce, tag); }
#endif

#ifdef PKTASSERT_HOOK_TC
BPF_ARRAY(pktassert_tc_opts, struct pktassert_tc_opts, 1);
static __always_inline struct pktassert_tc_opts *pktassert_tc_opts_at(__u32 *key) { return pktassert_tc_opts.lookup(key); }

int pktassert_tc(struct __sk_buff *skb)
{
	return pktassert_inspect_tc(skb);
}

/* The filter alone, for cost(): the same maps, none of our work. */
int pktassert_bare(struct __sk_buff *skb)
{
	return PKTASSERT_FILTER(skb);
}
#else
int pktassert_xdp(struct xdp_md *ctx)
{
	return pktassert_inspect(ctx);
}

/* The filter alone, for cost(): the same maps, none of our work. */
int pktassert_bare(struct xdp_md *ctx)
{
	return PKTASSERT_FILTER(ctx);
}
#endif
