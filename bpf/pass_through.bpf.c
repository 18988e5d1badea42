/* The filter a `dut` test without one of its own gets: every frame on to the stack, so what the
 * test asserts is what the stack (nftables, sockets) did with it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pass_through(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
