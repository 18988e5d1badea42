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
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
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
	__u32 trace_id;   /* nftables' trace ID bound to it (pktassert_trace_ids), while traced is set */
	__u32 traced;
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

/* The packet this CPU is receiving (set at netif_receive_skb, which runs the ingress hooks next in
 * the same call): pktassert's ingress rule's trace event names its trace ID (pktassert_on_trace). */
struct current_packet {
	__u32 tag;
	__u32 generation;   /* 0: not one of ours */
	__u64 skb;          /* its sk_buff: its live entry keeps the trace ID, to unbind it when it ends */
};

/* nftables' trace ID of a packet (a hash of its sk_buff's address, flow hash and input device; the
 * same in every chain) -> the packet. Later events (other chains, after a list of packets was
 * received as a batch) find their packet here. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct current_packet);
} pktassert_trace_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct current_packet);
} pktassert_current SEC(".maps");

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

/* From Linux 6.2; weak: on older kernels pktassert_on_socket is not loaded, pktassert_on_filter is. */
extern void *bpf_cast_to_kern_ctx(void *) __ksym __weak;

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
	struct live *l = bpf_map_lookup_elem(&pktassert_live, &key);
	if (l && l->traced) {   /* its trace ID is free for another packet: the binding map stays small */
		__u32 id = l->trace_id;
		bpf_map_delete_elem(&pktassert_trace_ids, &id);
	}
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

/* A packet of ours enters the DUT's stack (received on its veth, or sent from pktassert's raw socket):
 * its sk_buff is registered under its tag, its fate slot starts afresh, it is this CPU's current packet. */
static __always_inline void enter(struct sk_buff *skb, __u32 tag, struct pktassert_fate_config *cfg,
				  struct current_packet *cur)
{
	__u64 key = (__u64)skb;
	struct live l = {.tag = tag, .generation = cfg->generation, .head = skb->head};
	bpf_map_update_elem(&pktassert_live, &key, &l, BPF_ANY);
	__u32 slot = tag % PKTASSERT_SLOTS;
	struct pktassert_fate *f = bpf_map_lookup_elem(&pktassert_fates, &slot);
	if (f) {
		__builtin_memset(f, 0, sizeof(*f));
		f->tag = tag;
		f->flags = PKTASSERT_F_RECEIVED;
	}
	if (cur) {
		struct current_packet now = {.tag = tag, .generation = cfg->generation, .skb = key};
		*cur = now;
	}
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(pktassert_on_receive, struct sk_buff *skb)
{
	struct pktassert_fate_config *cfg = fate_config();
	struct net_device *dev = skb->dev;   /* tp_btf: the kernel's own pointers, read directly */
	/* Only the DUT's veth: a packet a tunnel of the DUT's decapsulates comes by again on the tunnel's
	 * device, the same sk_buff, and stays the packet it was (tests/test_conntrack_states.py). */
	if (!cfg || !dev || dev->ifindex != cfg->ifindex || dev->nd_net.net->net_cookie != cfg->netns)
		return 0;
	__u64 key = (__u64)skb;
	unsigned char *head = skb->head;
	__u32 zero = 0;
	struct current_packet *cur = bpf_map_lookup_elem(&pktassert_current, &zero);
	if (cur)
		cur->generation = 0;
	/* The tag: the trailer [magic, tag] our XDP stage gave the frame back (bpf/inspector.h), at the end
	 * of its data; a frame in fragments has none there (untracked: UNKNOWN). */
	__u32 t[2] = {};
	if (skb->data_len || skb->len < sizeof(t) || bpf_probe_read_kernel(t, sizeof(t), head + skb->tail - sizeof(t)) ||
	    (__builtin_bswap32(t[0]) != PKTASSERT_MAGIC_RING && __builtin_bswap32(t[0]) != PKTASSERT_MAGIC_ENGINE)) {
		forget(skb, cfg);   /* not ours: never let an old entry stand for it */
		return 0;
	}
	__u32 tag = __builtin_bswap32(t[1]);
	if (cfg->raw) {
		struct live l = {.tag = tag, .generation = cfg->generation, .head = head};
		__u64 head_key = (__u64)head;
		bpf_map_update_elem(&pktassert_live_heads, &head_key, &l, BPF_ANY);
	}
	enter(skb, tag, cfg, cur);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(pktassert_on_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct pktassert_fate *f = tracked(skb);
	claim_answer(skb, f);
	if (!f)
		return 0;
	struct pktassert_fate_config *cfg = fate_config();
	if (f->flags & PKTASSERT_F_SENT && (!cfg || !in_dut(skb->dev, cfg))) {   /* the peer's to free */
		forget(skb, cfg);
		return 0;
	}
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
	if (!(f->flags & PKTASSERT_F_SENT))   /* a sent packet freed after it left is the peer's business */
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

/* A packet handed to the DUT's veth to send (before the driver runs: the sk_buff is still the DUT's):
 * sent on the wire. Ours when it is tracked, or when the tc inspector marked it in the control block
 * (inject.from_dut through a tc egress filter: bpf/record.h PKTASSERT_MAGIC_SENT). Once the peer's
 * (its device the peer's veth), its free is not the DUT's drop (pktassert_on_drop, _consume). */
SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(pktassert_on_xmit, struct sk_buff *skb, struct net_device *dev)
{
	struct pktassert_fate_config *cfg = fate_config();
	if (!cfg || !dev || dev->ifindex != cfg->ifindex || !in_dut(dev, cfg))
		return 0;
	struct pktassert_fate *f = tracked(skb);
	if (!f) {
		__u32 cb[2];   /* struct qdisc_skb_cb: data[] (tc's __sk_buff cb[]) after 8 bytes */
		if (bpf_probe_read_kernel(cb, sizeof(cb), skb->cb + 8) || cb[0] != PKTASSERT_MAGIC_SENT)
			return 0;
		__u32 tag = cb[1], slot = tag % PKTASSERT_SLOTS;
		f = bpf_map_lookup_elem(&pktassert_fates, &slot);
		if (!f)
			return 0;
		__builtin_memset(f, 0, sizeof(*f));
		f->tag = tag;
		__u64 key = (__u64)skb;
		struct live l = {.tag = tag, .generation = cfg->generation, .head = skb->head};
		bpf_map_update_elem(&pktassert_live, &key, &l, BPF_ANY);
	}
	f->flags |= PKTASSERT_F_SENT;
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

/* The same, where bpf_cast_to_kern_ctx is missing (before 6.2: Debian 12's 6.1): sk_filter_trim_cap() is
 * where the kernel runs a socket's filter, so it is probed there. A test socket is one that carries
 * pktassert_keep (attached as pktassert_on_socket is, and inherited the same way by a TCP connection's
 * socket from its listener): the program's id, written by Python after load, is compared. */
SEC("socket")
int pktassert_keep(struct __sk_buff *ctx)
{
	return -1;   /* keep the whole packet */
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);   /* pktassert_keep's program id */
} pktassert_keep_id SEC(".maps");

SEC("kprobe/sk_filter_trim_cap")
int BPF_KPROBE(pktassert_on_filter, struct sock *sk, struct sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *keep = bpf_map_lookup_elem(&pktassert_keep_id, &zero);
	struct sk_filter *filter = BPF_CORE_READ(sk, sk_filter);
	if (!keep || !*keep || !filter || BPF_CORE_READ(filter, prog, aux, id) != *keep)
		return 0;
	__u64 key = (__u64)skb;
	__u64 head_key = (__u64)BPF_CORE_READ(skb, head);
	struct live *l = bpf_map_lookup_elem(&pktassert_live, &key);
	struct pktassert_fate *f = l && l->head == (void *)head_key ? fate_of(l) : NULL;
	if (!f)   /* a clone (raw sockets): the same data buffer as a tracked packet */
		f = fate_of(bpf_map_lookup_elem(&pktassert_live_heads, &head_key));
	if (f) {
		f->flags |= PKTASSERT_F_DELIVERED;
		/* the socket's cookie if it has one yet (bpf_get_socket_cookie would make one; a kprobe cannot) */
		f->socket = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	}
	return 0;
}

/* ---- Which nftables rule decided: nftables' own trace events, read where they are sent ----
 * pktassert's ingress chain on the DUT's veth sets nftrace on every packet; nftables then sends a
 * trace event (netlink, group NFTRACE) for each rule that matched and each policy applied, from
 * inside the packet's own processing. This filter sits on pktassert's trace socket: it runs as each
 * event is sent, on the packet's CPU, takes the decision into the packet's fate slot and drops the
 * event (nothing is queued, nothing to parse in Python, no buffer to overflow). Events belong to
 * the CPU's current packet only under the trace ID its first event (pktassert's rule) carried: a
 * packet the stack sends while it handles ours (a reset) has another. */
#define NFTA_TRACE_TABLE 1
#define NFTA_TRACE_CHAIN 2
#define NFTA_TRACE_RULE_HANDLE 3
#define NFTA_TRACE_TYPE 4
#define NFTA_TRACE_VERDICT 5
#define NFTA_TRACE_ID 6
#define NFTA_TRACE_POLICY 16
#define NFTA_VERDICT_CODE 1
#define NFT_TRACETYPE_POLICY 1
#define NFT_TRACETYPE_RULE 3
#define NAME_MOST 64   /* table and chain name bytes hashed (nftables allows 256) */
#define NL_HEAD 20     /* struct nlmsghdr + struct nfgenmsg */

/* FNV-1a of the NUL-terminated string attribute at off (payload length n); 0 when unreadable. */
static __always_inline __u32 name_hash(struct __sk_buff *nl, __u32 off, __u32 n)
{
	__u8 buf[NAME_MOST] = {};
	if (n > NAME_MOST)
		n = NAME_MOST;
	if (n < 1)
		return 0;
	n = ((n - 1) & (NAME_MOST - 1)) + 1;   /* the same n, in a range the verifier can see: 1..NAME_MOST */
	if (bpf_skb_load_bytes(nl, off, buf, n))
		return 0;
	__u32 h = 2166136261u;
	for (__u32 i = 0; i < NAME_MOST; i++) {
		/* i stays the index the verifier follows: without this clang walks a pointer through buf and
		 * counts down from n beside it, which verifiers before 6.8 (Debian 12's 6.1) cannot tie
		 * together ("invalid read from stack"). */
		asm volatile("" : "+r"(i));
		if (i >= n || !buf[i])
			break;
		h = (h ^ buf[i]) * 16777619u;
	}
	return h;
}

SEC("socket")
int pktassert_on_trace(struct __sk_buff *nl)
{
	struct pktassert_fate_config *cfg = fate_config();
	if (!cfg)
		return 0;
	__u8 family = 0;
	__u64 table[2] = {};
	if (bpf_skb_load_bytes(nl, 16, &family, 1))
		return 0;
	/* First where each attribute is; names are hashed only for an event that decides one of our packets. */
	__u32 off = NL_HEAD, id = 0, type = 0, have_id = 0, table_at = 0, table_n = 0, chain_at = 0, chain_n = 0;
	__u64 handle = 0;
	__s32 verdict = -1;
	for (int i = 0; i < 10; i++) {
		__u16 h[2];
		if (bpf_skb_load_bytes(nl, off, h, sizeof(h)) || h[0] < 4)
			break;
		__u16 kind = h[1] & 0x3fff, n = h[0] - 4;
		__u32 v32;
		if (kind == NFTA_TRACE_TABLE) {
			table_at = off + 4, table_n = n;
			if (n == 16)   /* only a name of 15 bytes and its NUL can be pktassert's own */
				bpf_skb_load_bytes(nl, off + 4, table, 16);
		} else if (kind == NFTA_TRACE_CHAIN) {
			chain_at = off + 4, chain_n = n;
		} else if (kind == NFTA_TRACE_RULE_HANDLE) {
			__u64 v64;
			if (!bpf_skb_load_bytes(nl, off + 4, &v64, 8))
				handle = bpf_be64_to_cpu(v64);
		} else if (kind == NFTA_TRACE_TYPE || kind == NFTA_TRACE_ID || kind == NFTA_TRACE_POLICY) {
			if (bpf_skb_load_bytes(nl, off + 4, &v32, 4))
				return 0;
			v32 = bpf_ntohl(v32);
			if (kind == NFTA_TRACE_TYPE)
				type = v32;
			else if (kind == NFTA_TRACE_ID)
				id = v32, have_id = 1;
			else
				verdict = (__s32)v32;
		} else if (kind == NFTA_TRACE_VERDICT) {   /* nested: its first attribute is the code */
			__u16 in[2];
			if (!bpf_skb_load_bytes(nl, off + 4, in, sizeof(in)) && (in[1] & 0x3fff) == NFTA_VERDICT_CODE &&
			    !bpf_skb_load_bytes(nl, off + 8, &v32, 4))
				verdict = (__s32)bpf_ntohl(v32);
		} else if (kind > NFTA_TRACE_ID && kind != NFTA_TRACE_POLICY && kind != 15) {
			break;   /* the headers and interfaces follow the decision */
		}
		off += (h[0] + 3) & ~3;
	}
	if (!have_id)
		return 0;
	/* "pktassert_trace\0", pktassert's own table (programs/nft_ruleset.py OURS), little-endian */
	if (table[0] == 0x7265737361746b70ULL && table[1] == 0x0065636172745f74ULL) {
		__u32 zero = 0;
		struct current_packet *cur = bpf_map_lookup_elem(&pktassert_current, &zero);
		if (cur && (family == 5 /* NFPROTO_NETDEV: the ingress chain */ || family == 1 /* inet: the output chain */)) {
			if (cur->generation && cur->generation == cfg->generation) {
				bpf_map_update_elem(&pktassert_trace_ids, &id, cur, BPF_ANY);
				__u64 key = cur->skb;
				struct live *l = bpf_map_lookup_elem(&pktassert_live, &key);
				if (l) {
					l->trace_id = id;
					l->traced = 1;
				}
			} else   /* not ours: an older packet's binding of this ID is not its */
				bpf_map_delete_elem(&pktassert_trace_ids, &id);
		}
		return 0;
	}
	if ((type != NFT_TRACETYPE_RULE && type != NFT_TRACETYPE_POLICY) || verdict < 0 || (verdict & 0xffff) > 3)
		return 0;   /* continue, jump, goto, return: no decision */
	struct current_packet *cur = bpf_map_lookup_elem(&pktassert_trace_ids, &id);
	if (!cur || cur->generation != cfg->generation)
		return 0;
	__u32 slot = cur->tag % PKTASSERT_SLOTS;
	struct pktassert_fate *f = bpf_map_lookup_elem(&pktassert_fates, &slot);
	if (!f || f->tag != cur->tag)
		return 0;
	if (f->rule_kind != PKTASSERT_RULE_NONE && f->rule_verdict != 1 /* NF_ACCEPT */)
		return 0;   /* the first verdict that did not accept it decided; later chains never saw it */
	f->rule_handle = type == NFT_TRACETYPE_RULE ? handle : 0;
	f->rule_chain = name_hash(nl, table_at, table_n) ^ (name_hash(nl, chain_at, chain_n) * 0x9E3779B1u);
	f->rule_family = family;
	f->rule_kind = type == NFT_TRACETYPE_RULE ? PKTASSERT_RULE_RULE : PKTASSERT_RULE_POLICY;
	f->rule_verdict = verdict & 0xff;
	return 0;   /* taken: the event is dropped, never queued on the socket */
}

/* What the DUT sends through its stack (inject.from_dut with a rule set): Python writes each packet's tag
 * here before it sends it from its raw socket (that socket's cookie); pktassert_nf_out takes it. */
struct out_next {
	__u64 cookie;   /* SO_COOKIE of pktassert's raw socket in the DUT namespace; 0: none */
	__u32 tag;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct out_next);
} pktassert_out SEC(".maps");

/* ---- Connection state and NAT: netfilter programs at pktassert's own hook priorities ----
 * (BPF_PROG_TYPE_NETFILTER, Linux 6.4; attached per namespace by instruments/fate_tracker.py.) */
#define NF_ACCEPT_V 1

static __always_inline void read_tuple(struct sk_buff *skb, struct pktassert_tuple *t, __u8 *version)
{
	if (skb->network_header == (__u16)~0U)
		return;
	unsigned char *nh = skb->head + skb->network_header;
	__u8 ip[40];
	if (bpf_probe_read_kernel(ip, 20, nh))
		return;
	__u32 l4off;
	__u8 proto;
	if (ip[0] >> 4 == 4) {
		*version = 4;
		__builtin_memcpy(t->saddr, ip + 12, 4);
		__builtin_memcpy(t->daddr, ip + 16, 4);
		l4off = (ip[0] & 0x0f) * 4;
		proto = ip[9];
		if ((ip[6] & 0x1f) | ip[7])   /* a later fragment: no ports */
			return;
	} else if (ip[0] >> 4 == 6) {
		if (bpf_probe_read_kernel(ip, 40, nh))
			return;
		*version = 6;
		__builtin_memcpy(t->saddr, ip + 8, 16);
		__builtin_memcpy(t->daddr, ip + 24, 16);
		l4off = 40;
		proto = ip[6];
	} else {
		return;
	}
	__be16 ports[4];
	if (bpf_probe_read_kernel(ports, sizeof(ports), nh + (l4off & 0x3ff)))
		return;
	if (proto == 6 || proto == 17 || proto == 132 || proto == 33 || proto == 136) {
		t->sport = ports[0];
		t->dport = ports[1];
	} else if (proto == 1 || proto == 58) {   /* ICMP: the echo identifier NAT maps */
		t->sport = t->dport = ports[2];
	}
}

/* The netfilter programs' context, as Linux 6.4 defines it (struct bpf_nf_ctx): named here so that this
 * file compiles against an older kernel's vmlinux.h (Debian 12's 6.1), where these programs are not
 * loaded; CO-RE relocates the fields to the running kernel's struct where they are. */
struct bpf_nf_ctx___pktassert {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
} __attribute__((preserve_access_index));

/* PRE_ROUTING and LOCAL_OUT, just after conntrack (-199): the state the rule set's chains see. */
SEC("netfilter")
int pktassert_nf_ct(struct bpf_nf_ctx___pktassert *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct pktassert_fate *f = tracked(skb);
	if (!f)
		return NF_ACCEPT_V;
	__u64 nfct = skb->_nfct;
	f->ct_info = !nfct ? PKTASSERT_CT_NONE : (nfct & 7) + 1;
	if (nfct & ~7UL) {
		struct nf_conn *ct = (struct nf_conn *)(nfct & ~7UL);
		f->ct_status = (__u32)BPF_CORE_READ(ct, status);
	}
	return NF_ACCEPT_V;
}

/* LOCAL_IN, FORWARD and POST_ROUTING, first: destination NAT is done. */
SEC("netfilter")
int pktassert_nf_mid(struct bpf_nf_ctx___pktassert *ctx)
{
	struct pktassert_fate *f = tracked(ctx->skb);
	if (f && !f->mid_hook) {
		read_tuple(ctx->skb, &f->mid, &f->version);
		f->mid_hook = ctx->state->hook + 1;
	}
	return NF_ACCEPT_V;
}

/* LOCAL_IN and POST_ROUTING, last but conntrack's confirm: source NAT is done too. */
SEC("netfilter")
int pktassert_nf_end(struct bpf_nf_ctx___pktassert *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct pktassert_fate *f = tracked(skb);
	if (!f)
		return NF_ACCEPT_V;
	read_tuple(skb, &f->end, &f->version);
	f->end_hook = ctx->state->hook + 1;
	f->flags |= PKTASSERT_F_NF_END;
	__u64 nfct = skb->_nfct;
	if (nfct & ~7UL) {
		struct nf_conn *ct = (struct nf_conn *)(nfct & ~7UL);
		f->ct_status_end = (__u32)BPF_CORE_READ(ct, status);
	}
	return NF_ACCEPT_V;
}

/* LOCAL_OUT, first: a packet pktassert's raw socket sends is registered with the tag Python set for it,
 * as netif_receive_skb registers one that arrives; the CPU's current packet for nftables' trace. */
SEC("netfilter")
int pktassert_nf_out(struct bpf_nf_ctx___pktassert *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct pktassert_fate_config *cfg = fate_config();
	__u32 zero = 0;
	struct current_packet *cur = bpf_map_lookup_elem(&pktassert_current, &zero);
	if (cur)
		cur->generation = 0;
	struct out_next *out = bpf_map_lookup_elem(&pktassert_out, &zero);
	struct sock *sk = skb->sk;
	if (!cfg || !out || !out->cookie || !sk)
		return NF_ACCEPT_V;
	__u64 cookie = sk->__sk_common.skc_cookie.counter;   /* set: Python read SO_COOKIE first */
	if (cookie != out->cookie)
		return NF_ACCEPT_V;
	enter(skb, out->tag, cfg, cur);
	return NF_ACCEPT_V;
}
