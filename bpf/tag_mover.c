/* pktassert's XDP stage in front of a tc ingress filter: passes every frame on as it came, its
 * trailer [magic, tag] included. It is there because the traffic engine delivers through an XDP
 * program on the DUT; the tc inspector (bpf/inspector_tc.h) takes the tag from the trailer and cuts it
 * off before the filter runs, the fate tracker reads it at receive, and GRO never merges frames whose
 * length differs from their IP header's. Not XDP metadata: a tc filter would see it there. */
#include <uapi/linux/bpf.h>

int pktassert_tag_mover(struct xdp_md *ctx)
{
	return XDP_PASS;
}
