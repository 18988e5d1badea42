/* The inspector's contract: one record per frame, per-verdict counters, the tag trailer.
 * pktassert/instruments/record.py reads this file (the #defines) and the compiled layout of
 * struct pktassert_record; nothing else on the Python side knows these numbers.
 * Every name here starts with pktassert_/PKTASSERT_: reserved, a filter may not use them. */
#ifndef PKTASSERT_RECORD_H
#define PKTASSERT_RECORD_H

/* Injected frames end in an 8-byte trailer: magic, then the tag (both big-endian).
 * The inspector removes it before the filter runs, so the filter sees the frame as crafted.
 * The magic says where the record goes. Tags are unique for the life of a loaded program. */
#define PKTASSERT_TRAILER_LEN 8
#define PKTASSERT_MAGIC_RING 0x706b7461    /* live tier, socket: the record through the ring buffer */
#define PKTASSERT_MAGIC_UNIT 0x706b7475    /* unit tier (BPF_PROG_TEST_RUN): the record into its slot */
#define PKTASSERT_MAGIC_ENGINE 0x706b7465  /* live tier, traffic engine: the record into its slot */
#define PKTASSERT_UNTAGGED 0xffffffff

/* Frames the filter sends out (XDP_TX, XDP_REDIRECT) in the live tier carry 8 bytes of XDP
 * metadata (not frame bytes): this magic, then the tag, both big-endian; the receiver on the
 * far end reads them (bpf/receiver.c). */
#define PKTASSERT_MAGIC_OUT 0x706b746f

/* Slot records go to slot tag % PKTASSERT_SLOTS of the mmap-able array pktassert_slots. The slot
 * is written before the filter runs (verdict PKTASSERT_PENDING) and completed after it, before
 * the frame is counted: a frame whose filter left through a tail call keeps PENDING. */
#define PKTASSERT_SLOTS 262144
#define PKTASSERT_PENDING 0xff

/* Slots of the per-CPU counter array: two groups of PKTASSERT_CTR_GROUP, injected (tagged)
 * frames first, then frames pktassert did not send (the stacks' own traffic). In a group, XDP
 * counts actions 0..4 in slots 0..4 and values that are not actions in slot 5; tc counts the
 * action the kernel takes, TC_ACT_UNSPEC (-1)..TC_ACT_TRAP (8), in slots 0..9. */
#define PKTASSERT_CTR_GROUP 12
#define PKTASSERT_CTR_INVALID 5
#define PKTASSERT_CTR_TAGGED 0
#define PKTASSERT_CTR_STRAY 12
#define PKTASSERT_CTR_LOST 24      /* records the ring buffer had no room for */
#define PKTASSERT_CTR_ENTERED 25   /* injected frames handed to the filter */
#define PKTASSERT_CTR_SLOTS 26

/* Frames the DUT sends (egress, tc): the sender sets skb->priority to this magic and skb->mark to
 * the tag; the tc inspector takes them and gives the filter the mark and priority the test chose
 * (pktassert_tc_opts). Frames our XDP stage passed carry [magic, tag] in XDP metadata into the skb. */
#define PKTASSERT_MAGIC_EGRESS 0x706b7467
/* A frame the DUT sent (inject.from_dut) that the tc egress filter let go: after the filter returned,
 * the tc inspector writes this magic and the tag into the sk_buff's control block (__sk_buff cb[0],
 * cb[1]), for the fate tracker to see it leave on the wire (bpf/fates.bpf.c, net_dev_start_xmit). */
#define PKTASSERT_MAGIC_SENT 0x706b7473


/* pktassert_record.parsed: how far the parser got. */
#define PKTASSERT_P_L2 0x01
#define PKTASSERT_P_L3 0x02
#define PKTASSERT_P_L4 0x04
#define PKTASSERT_P_TRUNCATED 0x08   /* a header ran past the end of the frame */
#define PKTASSERT_P_FRAGMENT 0x10    /* non-first IP fragment: no L4 header to parse */
#define PKTASSERT_P_VLAN_MORE 0x20   /* more than two VLAN tags */

/* pktassert_record.note */
#define PKTASSERT_N_TAIL_CALL 0x01   /* the verdict is a tail-called program's (set by Python, unit tier) */
#define PKTASSERT_N_OUT_UNTAGGED 0x02  /* sent out, but no room for the metadata tag */

struct pktassert_record {
	__u64 ts_ns;
	__u32 tag;
	__u32 len;         /* frame length the filter saw */
	__u32 ifindex;     /* ingress */
	__u32 verdict;     /* the action the kernel takes for ret (XDP: ABORTED for a non-action; tc: a signed TC_ACT_*) */
	__s32 ret;         /* the filter's return value as it returned it */
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
	__u8 parsed;       /* PKTASSERT_P_* */
	__u8 note;         /* PKTASSERT_N_* */
	__u16 sport;       /* host byte order */
	__u16 dport;
	__u8 src[16];      /* IPv4 in the first 4 bytes */
	__u8 dst[16];
};

#endif
