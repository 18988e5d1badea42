// SPDX-License-Identifier: GPL-2.0
/* Issue 19, finding 4 (tests/test_oracle.py): a tc classifier that drops a frame carrying XDP metadata
 * in front of it (data_meta < data). Alone on a link without XDP there is never any, so every frame
 * passes; a harness whose own tag rides in XDP metadata must not show it to the filter. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

SEC("tc")
int oracle_meta(struct __sk_buff *skb)
{
	void *meta = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;

	if (meta < data)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
