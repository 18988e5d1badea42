/* The fate tracker's contract (bpf/fates.bpf.c): one record per injected packet that reached the
 * DUT's stack, in slot tag % PKTASSERT_SLOTS of the mmap-able array pktassert_fates.
 * pktassert/observers/fate.py reads this file; nothing else on the Python side knows these numbers. */
#ifndef PKTASSERT_FATE_H
#define PKTASSERT_FATE_H

/* pktassert_fate.flags: what the kernel did with the packet's sk_buff, in the order it happened. */
#define PKTASSERT_F_RECEIVED 0x01    /* entered the DUT's stack (netif_receive_skb on its veth) */
#define PKTASSERT_F_DELIVERED 0x02   /* a test socket's filter saw it: the socket took it in */
#define PKTASSERT_F_DROPPED 0x04     /* freed as a drop (kfree_skb): reason and location say where */
#define PKTASSERT_F_CONSUMED 0x08    /* freed as done with (consume_skb), not dropped */
#define PKTASSERT_F_RESET 0x10       /* answered with a TCP reset: the stack's or nftables' (reject) */
#define PKTASSERT_F_ICMP 0x20        /* answered with an ICMP or ICMPv6 error: answer = type << 8 | code */
/* An answer (TCP reset, ICMP error) was pending on its CPU when it was freed, and its own headers could
 * not be read to tell whether that answer was its: whether it was answered is not known. */
#define PKTASSERT_F_ANSWER_UNKNOWN 0x40

struct pktassert_fate {
	__u32 tag;
	__u32 flags;
	__u32 reason;        /* enum skb_drop_reason of the running kernel (names from its BTF) */
	__u32 answer;
	__u64 location;      /* kernel text address that dropped it */
	__u64 socket;        /* SO_COOKIE of the test socket that took it */
};

#endif
