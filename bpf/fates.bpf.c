/* The fate tracker: what became of each injected packet after the filters passed it, from the
 * kernel's own tracepoints (tp_btf: trampolines are refused here, these are not).
 *
 * An sk_buff is identified by its address while it lives: netif_receive_skb on the DUT's veth
 * registers it with the tag our XDP stage put in its metadata; the drop and consume tracepoints,
 * the test sockets' filter and the reply tracepoints look it up. Nothing of the packet changes.
 *
 * Answers no tracepoint names the packet of: nftables' reject builds its TCP reset (and, in the
 * netdev and bridge families, its ICMP error) itself, and ICMPv6 errors have no tracepoint at all.
 * Every answer leaves through dev_queue_xmit, whose tracepoint (net_dev_queue) runs in the same
 * call as the code that answered, before that code returns and the stack frees the packet it
 * answered (netfilter's NF_DROP, the stack's NO_SOCKET, ...) on the same CPU. So an answer built
 * in the DUT's namespace waits on its CPU (pktassert_answer_seen) for the next sk_buff freed there
 * whose headers it answers: a reset's sequence or acknowledgement number follows from the
 * packet's (RFC 9293 3.10.7.1), an ICMP error quotes the packet's IP header. Only fields NAT
 * leaves alone are compared (conntrack translates an answer back after the fact). A packet freed
 * while an answer waits, whose headers cannot be read, gets F_ANSWER_UNKNOWN: never a guess. */
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

/* An answer the DUT's stack sent, waiting on its CPU for the packet it answers to be freed. */
struct answer_seen {
	__u32 generation;
	__u32 flags;     /* PKTASSERT_F_RESET or PKTASSERT_F_ICMP; 0: none waiting */
	__u32 answer;    /* ICMP: type << 8 | code */
	__u32 version;   /* 4 or 6: the answered packet's IP version */
	__u32 seq;       /* reset: its sequence number (network order), for a packet with ACK set */
	__u32 ack_seq;   /* reset: its acknowledgement number (network order), for one without */
	__u32 acked;     /* reset: it has ACK set (it answers a packet without) */
	__u32 pad;
	__u64 quote;     /* ICMP: the quoted IP header's bytes 2..9 (IPv4), 0..7 (IPv6) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct answer_seen);
} pktassert_answer_seen SEC(".maps");

#define ETH_P_IP_BE 0x0008     /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86   /* htons(0x86dd) */
#define PROTO_TCP 6
#define PROTO_ICMP 1
#define PROTO_ICMPV6 58
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* The first bytes of a TCP header, as on the wire. */
struct tcp_head {
	__be16 source, dest;
	__be32 seq, ack_seq;
	__u8 doff;    /* data offset << 4 */
	__u8 flags;
};

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

static __always_inline struct answer_seen *answer_seen(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pktassert_answer_seen, &zero);
}

static __always_inline int in_dut(struct net_device *dev, struct pktassert_fate_config *cfg)
{
	return dev && cfg->netns && dev->nd_net.net->net_cookie == cfg->netns;
}

/* Where the TCP header of the IPv4 or IPv6 packet at nh is and how long the segment is (header
 * included): 1, 0 when it is no TCP packet a reset may answer, -1 when it cannot be read. */
static __always_inline int tcp_of(unsigned char *nh, __u8 version, __u32 *off, __u32 *len)
{
	if (version == 4) {
		__u8 ip[10];
		if (bpf_probe_read_kernel(ip, sizeof(ip), nh))
			return -1;
		if (ip[9] != PROTO_TCP || ((ip[6] & 0x1f) | ip[7]))   /* not TCP, or not the first fragment */
			return 0;
		*off = (ip[0] & 0x0f) * 4;
		*len = (__u32)(ip[2] << 8 | ip[3]) - *off;
		return 1;
	}
	__u8 ip6[8];
	if (bpf_probe_read_kernel(ip6, sizeof(ip6), nh))
		return -1;
	__u8 next = ip6[6];
	*off = 40;
	*len = ip6[4] << 8 | ip6[5];
#pragma unroll
	for (int i = 0; i < 6 && next != PROTO_TCP; i++) {   /* extension headers, as nf_reject_ipv6 skips them */
		__u8 ext[4];
		__u32 hlen;
		if (bpf_probe_read_kernel(ext, sizeof(ext), nh + (*off & 0x3ff)))
			return -1;
		if (next == 0 || next == 43 || next == 60)   /* hop-by-hop, routing, destination options */
			hlen = (ext[1] + 1) * 8;
		else if (next == 51)                          /* authentication */
			hlen = (ext[1] + 2) * 4;
		else if (next == 44)                          /* fragment: only the first has the TCP header */
			hlen = ext[2] | (ext[3] & 0xf8) ? 0 : 8;
		else
			return 0;
		if (!hlen)
			return 0;
		next = ext[0];
		*off += hlen;
		*len -= hlen;
	}
	return next == PROTO_TCP ? 1 : -1;
}

/* Whether the answer waiting on this CPU answers the packet in skb: 1, 0, or -1 when its headers
 * cannot be read. */
static __always_inline int answers(struct answer_seen *a, struct sk_buff *skb)
{
	if (skb->network_header == (__u16)~0U)   /* never got that far */
		return -1;
	unsigned char *nh = skb->head + skb->network_header;
	__u8 first;
	if (bpf_probe_read_kernel(&first, 1, nh))
		return -1;
	if (first >> 4 != a->version)
		return 0;
	if (a->flags == PKTASSERT_F_ICMP) {   /* it quotes the packet's IP header as it was */
		__u64 quote;
		if (bpf_probe_read_kernel(&quote, sizeof(quote), nh + (a->version == 4 ? 2 : 0)))
			return -1;
		return quote == a->quote;
	}
	__u32 off = 0, len = 0;   /* a reset: the packet's TCP header says what it would carry */
	int tcp = tcp_of(nh, first >> 4, &off, &len);
	if (tcp <= 0)
		return tcp;
	struct tcp_head th;
	if (bpf_probe_read_kernel(&th, sizeof(th), nh + (off & 0x3ff)))
		return -1;
	if (th.flags & TCP_FLAG_RST)   /* never answered with a reset */
		return 0;
	if (th.flags & TCP_FLAG_ACK)
		return !a->acked && a->seq == th.ack_seq;
	__u32 next = __builtin_bswap32(th.seq) + !!(th.flags & TCP_FLAG_SYN) + !!(th.flags & TCP_FLAG_FIN) + len -
		     (th.doff >> 4) * 4;
	return a->acked && a->ack_seq == __builtin_bswap32(next);
}

/* skb is being freed (f: its fate, when it is ours): the answer waiting on this CPU is its, if its
 * headers say so. A packet not ours takes its own answer away with it (a neighbour's). */
static __always_inline void claim_answer(struct sk_buff *skb, struct pktassert_fate *f)
{
	struct answer_seen *a = answer_seen();
	if (!a || !a->flags)
		return;
	struct pktassert_fate_config *cfg = fate_config();
	if (!cfg || a->generation != cfg->generation) {
		a->flags = 0;
		return;
	}
	if (!f && !in_dut(skb->dev, cfg))
		return;
	int said = answers(a, skb);
	if (said > 0) {
		if (f) {
			f->flags |= a->flags;
			if (a->flags == PKTASSERT_F_ICMP)
				f->answer = a->answer;
		}
		a->flags = 0;
	} else if (said < 0 && f) {
		f->flags |= PKTASSERT_F_ANSWER_UNKNOWN;
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
	/* The tag: the trailer [magic, tag] our XDP stage gave the frame back (bpf/inspector.h), at the end
	 * of its data; a frame in fragments has none there (untracked: UNKNOWN). */
	__u32 t[2] = {};
	if (skb->data_len || skb->len < sizeof(t) || bpf_probe_read_kernel(t, sizeof(t), head + skb->tail - sizeof(t)) ||
	    (__builtin_bswap32(t[0]) != PKTASSERT_MAGIC_RING && __builtin_bswap32(t[0]) != PKTASSERT_MAGIC_ENGINE)) {
		forget(skb, cfg);   /* not ours: never let an old entry stand for it */
		return 0;
	}
	__u32 tag = __builtin_bswap32(t[1]);
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
	claim_answer(skb, f);
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
	claim_answer(skb, f);
	if (!f)
		return 0;
	f->flags |= PKTASSERT_F_CONSUMED;
	forget(skb, fate_config());
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(pktassert_on_reset, const struct sock *sk, const struct sk_buff *skb)
{
	if (!skb) {   /* a socket's own reset (tcp_send_active_reset, traced after it went): no packet's answer */
		struct answer_seen *a = answer_seen();
		if (a && a->flags == PKTASSERT_F_RESET)
			a->flags = 0;
		return 0;
	}
	struct pktassert_fate *f = tracked((struct sk_buff *)skb);
	if (f)
		f->flags |= PKTASSERT_F_RESET;
	return 0;
}

/* An sk_buff the DUT's stack built (no input interface) on its way out of a device in the DUT's
 * namespace: a TCP reset or an ICMP/ICMPv6 error waits here for the packet it answers. */
SEC("tp_btf/net_dev_queue")
int BPF_PROG(pktassert_on_queue, struct sk_buff *skb)
{
	struct pktassert_fate_config *cfg = fate_config();
	if (!cfg || skb->skb_iif || !in_dut(skb->dev, cfg))
		return 0;
	__u16 proto = skb->protocol;
	if (proto != ETH_P_IP_BE && proto != ETH_P_IPV6_BE)
		return 0;
	unsigned char *nh = skb->head + skb->network_header;
	__u8 ip[10];
	if (bpf_probe_read_kernel(ip, sizeof(ip), nh))
		return 0;
	__u8 version = ip[0] >> 4;
	__u32 off = version == 4 ? (ip[0] & 0x0f) * 4 : 40;
	__u8 l4 = version == 4 ? ip[9] : ip[6];
	struct answer_seen seen = {.generation = cfg->generation, .version = version};
	if (l4 == PROTO_TCP) {
		struct tcp_head th;
		if (bpf_probe_read_kernel(&th, sizeof(th), nh + (off & 0x3ff)) || !(th.flags & TCP_FLAG_RST))
			return 0;
		seen.flags = PKTASSERT_F_RESET;
		seen.seq = th.seq;
		seen.ack_seq = th.ack_seq;
		seen.acked = !!(th.flags & TCP_FLAG_ACK);
	} else if ((version == 4 && l4 == PROTO_ICMP) || (version == 6 && l4 == PROTO_ICMPV6)) {
		__u8 icmp[2];
		if (bpf_probe_read_kernel(icmp, sizeof(icmp), nh + (off & 0x3ff)))
			return 0;
		/* errors only: destination unreachable, source quench, time exceeded, parameter problem
		 * (IPv4); 1..4 (IPv6). Redirects answer a packet the stack forwards, not one it ends. */
		if (version == 4 ? icmp[0] != 3 && icmp[0] != 4 && icmp[0] != 11 && icmp[0] != 12 : icmp[0] < 1 || icmp[0] > 4)
			return 0;
		__u8 inner;   /* the quoted header, right after the 8-byte ICMP header */
		if (bpf_probe_read_kernel(&inner, 1, nh + (off & 0x3ff) + 8) || inner >> 4 != version)
			return 0;
		if (bpf_probe_read_kernel(&seen.quote, sizeof(seen.quote), nh + (off & 0x3ff) + 8 + (version == 4 ? 2 : 0)))
			return 0;
		seen.flags = PKTASSERT_F_ICMP;
		seen.answer = (__u32)icmp[0] << 8 | icmp[1];
	} else {
		return 0;
	}
	struct answer_seen *a = answer_seen();
	if (a)
		*a = seen;
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
