// SPDX-License-Identifier: GPL-2.0
/* A libbpf-style filter using what real ones use: BTF maps with struct keys and values, an LPM trie
 * of source prefixes, a per-CPU counter, a ring buffer of events, globals in .rodata/.data/.bss, a
 * non-inlined subprogram in .text, and a tail call into a second program of the same object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct flow { __be32 saddr; __be32 daddr; __u16 dport; __u8 proto; __u8 pad; };
struct verdict_info { __u64 packets; __u32 last_len; __u8 action; };
struct event { __be32 saddr; __u16 dport; __u16 len; };
struct lpm_v4 { __u32 prefixlen; __u8 addr[4]; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 256);
	 __type(key, struct flow); __type(value, struct verdict_info); } flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 64); __uint(map_flags, BPF_F_NO_PREALLOC);
	 __type(key, struct lpm_v4); __type(value, __u32); } deny_src SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, __u64); } per_cpu_packets SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096 * 4); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4);
	 __type(key, __u32); __type(value, __u32); } jump SEC(".maps");

const volatile __u16 tail_port = 0;    /* .rodata: frames to this port take the tail call */
__u32 drop_len_over = 100000;          /* .data */
__u64 udp_seen;                        /* .bss */

static __noinline int parse(struct xdp_md *ctx, struct flow *f, __u16 *len)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800))
		return -1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return -1;
	struct udphdr *l4 = (void *)ip + ip->ihl * 4;
	if ((void *)(l4 + 1) > end)
		return -1;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	f->dport = bpf_ntohs(l4->dest);
	*len = (__u16)(end - data);
	return 0;
}

SEC("xdp")
int drop_all(struct xdp_md *ctx) { return XDP_DROP; }

SEC("xdp")
int features(struct xdp_md *ctx)
{
	struct flow f = {};
	__u16 len = 0;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&per_cpu_packets, &zero);
	if (n)
		*n += 1;
	if (parse(ctx, &f, &len))
		return XDP_PASS;
	if (f.proto == 17)
		__sync_fetch_and_add(&udp_seen, 1);
	struct lpm_v4 k = { .prefixlen = 32 };
	__builtin_memcpy(k.addr, &f.saddr, 4);
	int action = bpf_map_lookup_elem(&deny_src, &k) ? XDP_DROP : XDP_PASS;
	if (len > drop_len_over)
		action = XDP_DROP;
	struct verdict_info *v = bpf_map_lookup_elem(&flows, &f);
	if (v) {
		v->packets++;
		v->last_len = len;
		v->action = action;
	} else {
		struct verdict_info nv = { .packets = 1, .last_len = len, .action = action };
		bpf_map_update_elem(&flows, &f, &nv, BPF_ANY);
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->saddr = f.saddr;
		e->dport = f.dport;
		e->len = len;
		bpf_ringbuf_submit(e, 0);
	}
	if (tail_port && f.dport == tail_port)
		bpf_tail_call(ctx, &jump, 0);
	return action;
}

char LICENSE[] SEC("license") = "GPL";
