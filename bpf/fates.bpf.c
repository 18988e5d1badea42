/* The fate tracker: what became of each injected packet after the filters passed it, from the
 * kernel's own tracepoints (tp_btf: trampolines are refused here, these are not).
 *
 * An sk_buff is identified by its address while it lives: netif_receive_skb on the DUT's veth
 * registers it with the tag our XDP stage put in its metadata; the drop and consume tracepoints,
 * the test sockets' filter and the reply tracepoints look it up. Nothing of the packet changes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "record.h"
#include "fate.h"

char LICENSE[] SEC("license") = "GPL";

/* Which device is the DUT's: written by Python after load (key 0). */
struct pktassert_fate_config {
	__u64 netns;      /* the DUT namespace's cookie (SO_NETNS_COOKIE) */
	__u32 ifindex;    /* its veth */
	__u32 generation; /* one per test: an sk_buff registered for an earlier test is not this one's */
	__u32 raw;        /* a raw test socket is open: track data buffers too (raw sockets get clones) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktassert_fate_config);
} pktassert_fate_config SEC(".maps");

struct live {
	__u32 tag;
	__u32 generation;
	void *head;   /* the data buffer it had: the same address later with another buffer is another packet */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);   /* per-CPU LRU lists: no lock shared between CPUs */
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct live);
} pktassert_live SEC(".maps");

/* The same by data buffer, for clones (a raw socket gets a clone of the packet, sharing its buffer). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);   /* per-CPU LRU lists: no lock shared between CPUs */
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct live);
} pktassert_live_heads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PKTASSERT_SLOTS);
	__type(key, __u32);
	__type(value, struct pktassert_fate);
} pktassert_fates SEC(".maps");


extern void *bpf_cast_to_kern_ctx(void *) __ksym;

static __always_inline struct pktassert_fate_config *fate_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pktassert_fate_config, &zero);
}

/* The fate slot of a registered packet, if it was registered for this test and is still its own. */
static __always_inline struct pktassert_fate *fate_of(struct live *l)
{
	struct pktassert_fate_config *cfg = fate_config();
	if (!l || !cfg || l->generation != cfg->generation)
		return NULL;
	__u32 slot = l->tag % PKTASSERT_SLOTS;
	struct pktassert_fate *f = bpf_map_lookup_elem(&pktassert_fates, &slot);
	return f && f->tag == l->tag ? f : NULL;
}

/* The fate slot of a tracked sk_buff, or NULL. */
static __always_inline struct pktassert_fate *tracked(struct sk_buff *skb)
{
	if (!skb)   /* some tracepoints' sk_buff may be NULL (tcp_send_reset without one) */
		return NULL;
	__u64 key = (__u64)skb;
	struct live *l = bpf_map_lookup_elem(&pktassert_live, &key);
	return l && l->head == skb->head ? fate_of(l) : NULL;
}

/* The sk_buff is gone (or was never ours): nothing may find a packet through it or its buffer any more. */
static __always_inline void forget(struct sk_buff *skb, struct pktassert_fate_config *cfg)
{
	__u64 key = (__u64)skb;
	bpf_map_delete_elem(&pktassert_live, &key);
	if (cfg && cfg->raw) {
		__u64 head_key = (__u64)skb->head;
		bpf_map_delete_elem(&pktassert_live_heads, &head_key);
	}
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(pktassert_on_receive, struct sk_buff *skb)
{
	struct pktassert_fate_config *cfg = fate_config();
	struct net_device *dev = skb->dev;   /* tp_btf: the kernel's own pointers, read directly */
	if (!cfg || !dev || dev->ifindex != cfg->ifindex || dev->nd_net.net->net_cookie != cfg->netns)
		return 0;
	__u64 key = (__u64)skb;
	unsigned char *head = skb->head;
	struct skb_shared_info *shinfo = (void *)(head + skb->end);
	__u8 meta_len = 0;
	__u32 meta[2] = {};
	bpf_probe_read_kernel(&meta_len, 1, &shinfo->meta_len);
	if (meta_len < sizeof(meta) || bpf_probe_read_kernel(meta, sizeof(meta), head + skb->mac_header - meta_len) ||
	    (__builtin_bswap32(meta[0]) != PKTASSERT_MAGIC_RING && __builtin_bswap32(meta[0]) != PKTASSERT_MAGIC_ENGINE)) {
		forget(skb, cfg);   /* not ours: never let an old entry stand for it */
		return 0;
	}
	__u32 tag = __builtin_bswap32(meta[1]);
	struct live l = {.tag = tag, .generation = cfg->generation, .head = head};
	bpf_map_update_elem(&pktassert_live, &key, &l, BPF_ANY);
	if (cfg->raw) {
		__u64 head_key = (__u64)head;
		bpf_map_update_elem(&pktassert_live_heads, &head_key, &l, BPF_ANY);
	}
	__u32 slot = tag % PKTASSERT_SLOTS;
	struct pktassert_fate *f = bpf_map_lookup_elem(&pktassert_fates, &slot);
	if (f) {
		struct pktassert_fate fresh = {.tag = tag, .flags = PKTASSERT_F_RECEIVED};
		*f = fresh;
	}
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(pktassert_on_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct pktassert_fate *f = tracked(skb);
	if (!f)
		return 0;
	f->flags |= PKTASSERT_F_DROPPED;
	f->reason = reason;
	f->location = (__u64)location;
	forget(skb, fate_config());
	return 0;
}

SEC("tp_btf/consume_skb")
int BPF_PROG(pktassert_on_consume, struct sk_buff *skb, void *location)
{
	struct pktassert_fate *f = tracked(skb);
	if (!f)
		return 0;
	f->flags |= PKTASSERT_F_CONSUMED;
	forget(skb, fate_config());
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(pktassert_on_reset, const struct sock *sk, const struct sk_buff *skb)
{
	struct pktassert_fate *f = tracked((struct sk_buff *)skb);
	if (f)
		f->flags |= PKTASSERT_F_RESET;
	return 0;
}

SEC("tp_btf/icmp_send")
int BPF_PROG(pktassert_on_icmp, const struct sk_buff *skb, int type, int code)
{
	struct pktassert_fate *f = tracked((struct sk_buff *)skb);
	if (f) {
		f->flags |= PKTASSERT_F_ICMP;
		f->answer = (__u32)type << 8 | (__u32)code;
	}
	return 0;
}

/* Attached (SO_ATTACH_BPF) to each test socket: runs when the kernel hands the socket a packet. */
SEC("socket")
int pktassert_on_socket(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct pktassert_fate *f = tracked(skb);
	if (!f) {   /* a clone (raw sockets): the same data buffer as a tracked packet */
		__u64 head_key = (__u64)skb->head;
		f = fate_of(bpf_map_lookup_elem(&pktassert_live_heads, &head_key));
	}
	if (f) {
		f->flags |= PKTASSERT_F_DELIVERED;
		f->socket = bpf_get_socket_cookie(ctx);
	}
	return -1;   /* keep the whole packet */
}
