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
#define PKTASSERT_F_NF_END 0x80      /* passed pktassert's last netfilter hook (only conntrack's confirm is later) */
#define PKTASSERT_F_SENT 0x100       /* left the DUT on its veth (net_dev_xmit): sent on the wire */

/* pktassert_fate.rule_kind: which of nftables' trace events decided the packet (bpf/fates.bpf.c). */
#define PKTASSERT_RULE_NONE 0
#define PKTASSERT_RULE_RULE 1        /* a rule's verdict */
#define PKTASSERT_RULE_POLICY 2      /* a base chain's policy */
/* pktassert_fate.ct_info: enum ip_conntrack_info + 1 as the rule set saw it (0: never passed conntrack's
 * place); PKTASSERT_CT_NONE: conntrack gave it no entry (nftables' "ct state invalid"). */
#define PKTASSERT_CT_NONE 9
/* pktassert_fate.where: the netfilter hooks the header snapshots (mid, end) were taken at, as
 * enum nf_inet_hooks (PRE_ROUTING 0, LOCAL_IN 1, FORWARD 2, LOCAL_OUT 3, POST_ROUTING 4) + 1. */

/* The addresses and ports of a packet as the stack held it at one point: NAT shows as a change. */
struct pktassert_tuple {
	__u8 saddr[16];      /* IPv4: the first 4 bytes */
	__u8 daddr[16];
	__be16 sport, dport; /* TCP, UDP, SCTP, DCCP; ICMP echo: id in both */
};

struct pktassert_fate {
	__u32 tag;
	__u32 flags;
	__u32 reason;        /* enum skb_drop_reason of the running kernel (names from its BTF) */
	__u32 answer;
	__u64 location;      /* kernel text address that dropped it */
	__u64 socket;        /* SO_COOKIE of the test socket that took it */
	__u64 rule_handle;   /* the deciding rule's handle (rule_kind RULE) */
	__u32 rule_chain;    /* FNV-1a of its table name, a NUL, its chain name (names of up to 63 bytes) */
	__u8 rule_family;    /* the chain's family (NFPROTO_*) */
	__u8 rule_kind;      /* PKTASSERT_RULE_* */
	__u8 rule_verdict;   /* NF_DROP 0, NF_ACCEPT 1, NF_STOLEN 2, NF_QUEUE 3 */
	__u8 ct_info;        /* see PKTASSERT_CT_NONE */
	__u32 ct_status;     /* the connection's IPS_* bits when the rule set judged the packet */
	__u32 ct_status_end; /* ... and at pktassert's last hook (before conntrack confirms a new one) */
	__u8 mid_hook;       /* where mid was taken (enum nf_inet_hooks + 1; 0: not taken) */
	__u8 end_hook;
	__u8 version;        /* 4 or 6: how to read the tuples */
	__u8 pad;
	__u32 pad2;
	struct pktassert_tuple mid;   /* after PRE_ROUTING (received) or LOCAL_OUT (sent): destination NAT done */
	struct pktassert_tuple end;   /* at the last hook: source NAT done too */
};

#endif
