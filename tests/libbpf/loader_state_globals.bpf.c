// SPDX-License-Identifier: GPL-2.0
/* Ports to drop, in global variables of every data section a loader fills before the program runs:
 * .rodata, .data, .bss and a custom .data.* section (its own map). Counters in .bss and the custom
 * section show whether what one test's frames wrote is still there in the next. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

const volatile __u16 rodata_port = 0;          /* .rodata, set before load */
__u16 data_port = 2;                           /* .data */
__u16 bss_port;                                /* .bss */
__u16 custom_port SEC(".data.custom") = 4;     /* .data.custom */
__u64 seen;                                    /* .bss */
__u64 custom_seen SEC(".data.custom") = 10;

SEC("xdp")
int by_globals(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);  /* no IP options in these tests */
	__u16 port;

	__sync_fetch_and_add(&seen, 1);
	__sync_fetch_and_add(&custom_seen, 1);
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(0x0800) || ip->protocol != 17)
		return XDP_PASS;
	port = bpf_ntohs(udp->dest);
	if ((rodata_port && port == rodata_port) || port == data_port || (bss_port && port == bss_port) ||
	    port == custom_port)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
