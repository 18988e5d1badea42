/* The inspector's contract: one record per frame, per-verdict counters, the tag trailer.
 * pktassert/record.py reads this file (the #defines) and the compiled layout of
 * struct pa_record; nothing else on the Python side knows these numbers. */
#ifndef PKTASSERT_RECORD_H
#define PKTASSERT_RECORD_H

/* Injected frames end in an 8-byte trailer: magic, then the tag (both big-endian).
 * The inspector removes it before the filter runs, so the filter sees the frame as crafted. */
#define PA_TRAILER_LEN 8
#define PA_TAG_MAGIC 0x706b7461
#define PA_UNTAGGED 0xffffffff

/* Unit runs (BPF_PROG_TEST_RUN) and the traffic engine (bpf/sender.c) tag frames with this
 * magic instead: their record goes to slot tag % PA_UNIT_SLOTS of the mmap-able array pa_unit,
 * read in bulk after each batch, instead of through the ring buffer. Batches are never larger
 * than the slots, and each is read before the next is sent. */
#define PA_UNIT_MAGIC 0x706b7475
#define PA_UNIT_SLOTS 262144

/* Slots of the per-CPU counter array. Verdicts 0..4 are the XDP actions themselves. */
#define PA_CTR_VERDICTS 5     /* slots 0..4: frames per XDP action */
#define PA_CTR_INVALID 5      /* filter returned something that is not an XDP action */
#define PA_CTR_UNTAGGED 6     /* frames without our trailer (not injected by us) */
#define PA_CTR_LOST 7         /* records the ring buffer had no room for */
#define PA_CTR_SLOTS 8

/* pa_record.parsed: how far the parser got. */
#define PA_P_L2 0x01
#define PA_P_L3 0x02
#define PA_P_L4 0x04
#define PA_P_TRUNCATED 0x08   /* a header ran past the end of the frame */
#define PA_P_FRAGMENT 0x10    /* non-first IP fragment: no L4 header to parse */
#define PA_P_VLAN_MORE 0x20   /* more than two VLAN tags */

struct pa_record {
	__u64 ts_ns;
	__u32 tag;
	__u32 len;         /* frame length the filter saw */
	__u32 ifindex;     /* ingress */
	__u32 verdict;     /* the filter's return value */
	__u16 ethertype;   /* innermost, after VLAN tags */
	__u16 vlan_outer;  /* VLAN IDs, 0 if absent */
	__u16 vlan_inner;
	__u8 vlan_count;
	__u8 l3;           /* 4, 6, or 0 */
	__u8 proto;        /* IPv4 protocol or final IPv6 next header */
	__u8 ttl;          /* TTL or hop limit */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 parsed;       /* PA_P_* */
	__u16 sport;       /* host byte order */
	__u16 dport;
	__u8 src[16];      /* IPv4 in the first 4 bytes */
	__u8 dst[16];
};

#endif
