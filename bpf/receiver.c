/* pktassert's receiver: attached with XDP to the peer's veth end and the honeypot's, it records
 * every frame that comes out of the DUT and passes it on unchanged (XDP_PASS).
 *
 * Why an XDP program at all: a veth takes frames that the other end's XDP program transmits
 * (XDP_TX) or redirects (ndo_xdp_xmit) only while the receiving end runs NAPI, which an XDP
 * program turns on. Without one they are dropped: XDP_TX as the DUT end's tx_dropped, a devmap
 * redirect as its rx_dropped (measured on 6.18).
 *
 * Every frame gets a 24-byte summary (seq, tag, ifindex, length, hash) in pa_rx_summaries, so
 * a flood of a million frames fits in 32 MiB; only the first `keep` frames since clear() also
 * have their bytes (up to PA_RX_SNAP) recorded in pa_rx_frames. What does not fit is counted. */
#include <uapi/linux/bpf.h>

#define PA_RX_MAGIC 0x706b746f /* "pkto", before the tag in the metadata the DUT side writes */
#define PA_RX_SNAP 2048        /* bytes kept (and hashed) per frame; a power of two */
#define PA_RX_TAGGED (1u << 31)
#define PA_RX_KEPT (1u << 30)
#define PA_RX_FNV_OFFSET 0xcbf29ce484222325ULL
#define PA_RX_FNV_PRIME 0x100000001b3ULL

struct pa_rx_summary {
	__u32 seq;       /* arrival order since clear(), over all attached interfaces */
	__u32 tag;       /* 0 when untagged */
	__u32 ifindex;   /* the interface it arrived on (in its own namespace) */
	__u32 len_flags; /* frame length (low 24 bits) | PA_RX_TAGGED | PA_RX_KEPT */
	__u64 hash;      /* FNV-1a over the little-endian 8-byte words of the first PA_RX_SNAP bytes */
};

struct pa_rx_scratch {
	struct pa_rx_summary s;
	__u8 bytes[PA_RX_SNAP];
};

BPF_RINGBUF_OUTPUT(pa_rx_summaries, PA_RX_SUMMARY_PAGES);
BPF_RINGBUF_OUTPUT(pa_rx_frames, PA_RX_FRAME_PAGES);
/* Per CPU: NAPI runs with bottom halves off, so nothing else on this CPU uses it meanwhile. */
BPF_PERCPU_ARRAY(pa_rx_scratch, struct pa_rx_scratch, 1);
/* Per CPU, summed by Python: see COUNTERS in receiver.py for the slots. */
BPF_PERCPU_ARRAY(pa_rx_counts, __u64, 8);
/* Set by Python at clear(). A lock, not an atomic: bcc's LLVM targets BPF v1, which has no
 * fetch-and-add, and frames arrive on several interfaces (NAPI instances) at once. */
struct pa_rx_state {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 next; /* the next seq */
	__u64 keep; /* frames with seq below this keep their bytes */
};
BPF_ARRAY(pa_rx_state, struct pa_rx_state, 1);

static __always_inline void pa_rx_count(__u32 slot)
{
	__u64 *c = pa_rx_counts.lookup(&slot);
	if (c)
		*c += 1;
}

int pktassert_receive(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct pa_rx_scratch *sc = pa_rx_scratch.lookup(&zero);
	struct pa_rx_state *st = pa_rx_state.lookup(&zero);
	if (!sc || !st)
		return XDP_PASS;
	pa_rx_count(0);

	void *data = (void *)(long)ctx->data;
	__u8 *meta = (void *)(long)ctx->data_meta;
	__u32 flags = 0, tag = 0;
	/* data_meta == data when there is none; data_meta > data if the driver has no metadata. */
	if (meta + 8 <= (__u8 *)data && *(__u32 *)meta == bpf_htonl(PA_RX_MAGIC)) {
		tag = bpf_ntohl(*(__u32 *)(meta + 4));
		flags |= PA_RX_TAGGED;
	}
	pa_rx_count(flags ? 1 : 2);

	__u32 len = bpf_xdp_get_buff_len(ctx);
	__u32 cap = len > PA_RX_SNAP ? PA_RX_SNAP : len;
	__u64 h = PA_RX_FNV_OFFSET;
	if (cap) {
		cap = ((cap - 1) & (PA_RX_SNAP - 1)) + 1; /* 1..SNAP, in a form the verifier can bound */
		if (bpf_xdp_load_bytes(ctx, 0, sc->bytes, cap))
			cap = 0;
	}
	for (__u32 i = 0; i < PA_RX_SNAP / 8; i++) {
		if (i * 8 >= cap)
			break;
		__u64 w = *(__u64 *)&sc->bytes[i * 8];
		__u32 left = cap - i * 8;
		if (left < 8)
			w &= (1ULL << (left * 8)) - 1;
		h = (h ^ w) * PA_RX_FNV_PRIME;
	}

	bpf_spin_lock(&st->lock);
	__u64 seq = st->next++, keep = st->keep;
	bpf_spin_unlock(&st->lock);
	if (seq < keep && cap)
		flags |= PA_RX_KEPT;
	sc->s.seq = seq;
	sc->s.tag = tag;
	sc->s.ifindex = ctx->ingress_ifindex;
	sc->s.len_flags = (len & 0xffffff) | flags;
	sc->s.hash = h;
	/* No wakeups: Python polls, and a wakeup per record would cost an irq_work per frame. */
	if (pa_rx_summaries.ringbuf_output(&sc->s, sizeof(sc->s), BPF_RB_NO_WAKEUP))
		pa_rx_count(3);
	if (flags & PA_RX_KEPT) {
		if (pa_rx_frames.ringbuf_output(sc, sizeof(sc->s) + cap, BPF_RB_NO_WAKEUP))
			pa_rx_count(5);
		else
			pa_rx_count(4);
	} else if (seq >= keep) {
		pa_rx_count(6);
	}
	return XDP_PASS;
}
