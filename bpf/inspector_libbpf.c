/* pktassert XDP inspector for libbpf sources and objects (pktassert/programs/libbpf_program.py). Compiled on its
 * own with clang and joined to the filter's object by libbpf's static linker; the filter's entry,
 * moved into .text (pktassert/kernel/elf_entry.py), is called as a global function: its code runs unchanged.
 * The work is in inspector.h (XDP) or inspector_tc.h (-DPKTASSERT_HOOK_TC).
 * Build: -DPKTASSERT_FILTER=<entry> -DPKTASSERT_CTX=<its argument type>. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "record.h"

#ifdef PKTASSERT_HOOK_TC
#define PKTASSERT_CTX_OF_HOOK struct __sk_buff *
#else
#define PKTASSERT_CTX_OF_HOOK struct xdp_md *
#endif

#ifndef PKTASSERT_RING_PAGES
#define PKTASSERT_RING_PAGES 1024
#endif

/* The filter's entry, defined in its object. */
extern int PKTASSERT_FILTER(PKTASSERT_CTX ctx);
#define PKTASSERT_CALL(ctx) PKTASSERT_FILTER((PKTASSERT_CTX)(ctx))

/* The parser as a global function, which the verifier checks once on its own rather than once per
 * path into it: 55,490 instructions processed per load down to 14,106 (75 ms -> 27 ms). */
struct pktassert_record;
#ifdef PKTASSERT_HOOK_TC
__attribute__((noinline)) int pktassert_parse_frame(struct __sk_buff *ctx, struct pktassert_record *r);
#define PKTASSERT_PARSE_SKB(ctx, r) pktassert_parse_frame(ctx, r)
#include "inspector_tc.h"
#define PKTASSERT_PARSE_ONE pktassert_parse_skb
#else
__attribute__((noinline)) int pktassert_parse_frame(struct xdp_md *ctx, struct pktassert_record *r);
#define PKTASSERT_PARSE(ctx, r) pktassert_parse_frame(ctx, r)
#include "inspector.h"
#define PKTASSERT_PARSE_ONE pktassert_parse
#endif

__attribute__((noinline)) int pktassert_parse_frame(PKTASSERT_CTX_OF_HOOK ctx, struct pktassert_record *r)
{
	if (r)  /* a global function's pointer argument may be NULL as far as the verifier knows */
		PKTASSERT_PARSE_ONE(ctx, r);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PKTASSERT_RING_PAGES * 4096);
} pktassert_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PKTASSERT_CTR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} pktassert_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktassert_scratch_value);
} pktassert_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PKTASSERT_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct pktassert_record);
} pktassert_slots SEC(".maps");

static __always_inline __u64 *pktassert_counter_at(__u32 *key) { return bpf_map_lookup_elem(&pktassert_counters, key); }
static __always_inline struct pktassert_scratch_value *pktassert_scratch_at(__u32 *key) { return bpf_map_lookup_elem(&pktassert_scratch, key); }
static __always_inline struct pktassert_record *pktassert_slot_at(__u32 *key) { return bpf_map_lookup_elem(&pktassert_slots, key); }
static __always_inline long pktassert_emit(struct pktassert_record *r) { return bpf_ringbuf_output(&pktassert_events, r, sizeof(*r), 0); }
#ifdef PKTASSERT_PRINTK
static __always_inline void pktassert_mark(__u32 nonce, __u32 tag) { bpf_printk("pktassert %u %u", nonce, tag); }
#endif

#ifdef PKTASSERT_HOOK_TC
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktassert_tc_opts);
} pktassert_tc_opts SEC(".maps");

static __always_inline struct pktassert_tc_opts *pktassert_tc_opts_at(__u32 *key) { return bpf_map_lookup_elem(&pktassert_tc_opts, key); }

SEC("tc")
int pktassert_tc(struct __sk_buff *skb)
{
	return pktassert_inspect_tc(skb);
}

/* The filter alone, for cost(): the same maps, none of our work. */
SEC("tc")
int pktassert_bare(struct __sk_buff *skb)
{
	return PKTASSERT_CALL(skb);
}
#else
SEC("xdp")
int pktassert_xdp(struct xdp_md *ctx)
{
	return pktassert_inspect(ctx);
}

/* The filter alone, for cost(): the same maps, none of our work. */
SEC("xdp")
int pktassert_bare(struct xdp_md *ctx)
{
	return PKTASSERT_CALL(ctx);
}
#endif
