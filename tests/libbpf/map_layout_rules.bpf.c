// SPDX-License-Identifier: GPL-2.0
/* Map keys and values whose C layout is not a plain row of aligned fields: bitfields (after a byte,
 * signed, 40 bits wide), a union, a nested struct with bitfields of its own, an array, padding in
 * the middle and at the tail. The kernel is the oracle: on every frame the program writes known
 * values, and checks field by field what the test wrote (tests/test_map_layout.py). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct rule { unsigned set:1, log:1; __u8 action; __u16 block_time; };   /* 4 bytes */

struct ports { __u16 lo, hi; unsigned do_lo:1, do_hi:1; };
/* XDP-Firewall's tcp_opts (trimmed): bitfields between u16s */
struct tcp_opts { unsigned enabled:1, do_sport:1; __u16 sport; unsigned do_dport:1; __u16 dport;
		  unsigned do_syn:1, syn:1, do_cwr:1, cwr:1; };
union addr { __u32 v4; __u8 bytes[4]; struct { __u16 a, b; } halves; };
struct layout {
	__u8 id;
	unsigned enabled:1;        /* bit 8: in the byte after id, as XDP-Firewall's filter_t has it */
	__u8 action;
	__u32 hits;
	int neg:5;                 /* signed */
	unsigned wide:20;
	__u64 big:40;
	union addr addr;
	struct ports ports;
	__u16 counts[3];
	struct tcp_opts tcp;       /* 4-aligned: padding before it */
	__u64 bytes;
	__u8 tail;                 /* and 7 bytes of tail padding */
};
struct rkey { __u8 proto; unsigned port:16, v6:1; };                      /* a key with bitfields */

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2);
	 __type(key, __u32); __type(value, struct rule); } rules SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2);
	 __type(key, __u32); __type(value, struct layout); } layouts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
	 __type(key, struct rkey); __type(value, __u32); } by_key SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __uint(max_entries, 4);
	 __type(key, int); __type(value, int); } tx_port SEC(".maps");

__u32 matched;   /* bit i: field i of layouts[1] was what the test wrote */

static __always_inline __u32 check(struct layout *l)
{
	return (l->id == 7) | (l->enabled == 1) << 1 | (l->action == 3) << 2 | (l->hits == 0xc0000201) << 3
	       | (l->neg == -9) << 4 | (l->wide == 0xabcde) << 5 | (l->big == 0x123456789aULL) << 6
	       | (l->addr.halves.a == 0x1122 && l->addr.halves.b == 0x3344) << 7
	       | (l->ports.lo == 1000 && l->ports.hi == 2000) << 8 | (!l->ports.do_lo && l->ports.do_hi) << 9
	       | (l->counts[0] == 1 && l->counts[1] == 2 && l->counts[2] == 65535) << 10
	       | (l->bytes == 0x0102030405060708ULL) << 11 | (l->tail == 0xee) << 12
	       | (!l->tcp.enabled && !l->tcp.sport && l->tcp.do_dport && l->tcp.dport == 8080 && !l->tcp.do_syn
		  && l->tcp.syn && l->tcp.do_cwr && !l->tcp.cwr) << 14;
}

SEC("xdp")
int map_layout(struct xdp_md *ctx)
{
	__u32 zero = 0, one = 1, seven = 7;
	struct rule mine;
	__builtin_memset(&mine, 0, sizeof(mine));   /* keys and values: no uninitialised padding bits */
	mine.set = 1; mine.log = 0; mine.action = 5; mine.block_time = 600;
	bpf_map_update_elem(&rules, &one, &mine, BPF_ANY);

	struct layout *l = bpf_map_lookup_elem(&layouts, &zero);
	if (l) {
		__builtin_memset(l, 0, sizeof(*l));
		l->id = 9; l->enabled = 1; l->action = 4; l->hits = 0xc6336401;
		l->neg = -16; l->wide = 0xfffff; l->big = 0xfedcba9876ULL;
		l->addr.v4 = 0xa1b2c3d4;
		l->ports.lo = 53; l->ports.hi = 65535; l->ports.do_lo = 1; l->ports.do_hi = 0;
		l->counts[0] = 10; l->counts[1] = 20; l->counts[2] = 30;
		l->tcp.enabled = 1; l->tcp.do_sport = 1; l->tcp.sport = 22; l->tcp.dport = 443;
		l->tcp.do_syn = 1; l->tcp.do_cwr = 1; l->tcp.cwr = 1;
		l->bytes = 0x1122334455667788ULL; l->tail = 0x7f;
	}
	l = bpf_map_lookup_elem(&layouts, &one);
	if (l)
		matched = check(l);

	struct rkey k;
	__builtin_memset(&k, 0, sizeof(k));
	k.proto = 17; k.port = 5353; k.v6 = 1;
	bpf_map_update_elem(&by_key, &k, &seven, BPF_ANY);
	k.proto = 6; k.port = 443; k.v6 = 0;
	if (bpf_map_lookup_elem(&by_key, &k))
		matched |= 1 << 13;

	struct rule *r = bpf_map_lookup_elem(&rules, &zero);
	return r && r->set && !r->log && r->action == 3 && r->block_time == 300 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
