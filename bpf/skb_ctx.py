"""The ``struct __sk_buff`` a tc test run starts from (BPF_PROG_TEST_RUN's ctx_in), from the fields
a test sets: laid out from the running kernel's BTF, so no offset is written down here.

The kernel takes only these fields in a test run's context (net/bpf/test_run.c,
convert___skb_to_skb); any other byte must be zero.
"""

from __future__ import annotations

import functools
from typing import Any

from pktassert.errors import InjectError

from . import btf_types

SETTABLE = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len", "gso_segs", "gso_size",
            "hwtstamp")


@functools.cache
def skb_type() -> Any:
    btf = btf_types.kernel()
    return btf.ctype(btf.find("__sk_buff", btf_types.STRUCT))


def context(fields: dict[str, Any]) -> bytes:
    """The context bytes for ``fields`` (mark=, priority=, cb=[...], ...)."""
    from pktassert.state_map import MapValueError, to_ctype

    unknown = sorted(set(fields) - set(SETTABLE))
    if unknown:
        raise InjectError(f"{', '.join(f'{u}=' for u in unknown)}: a tc test run sets only these sk_buff fields: "
                          f"{', '.join(SETTABLE)}.")
    t = skb_type()
    ctx = t()
    for name, value in fields.items():
        ftype = dict((n, ft) for n, ft, *_ in t._fields_)[name]
        try:
            setattr(ctx, name, to_ctype(ftype, value, f"{name}="))
        except MapValueError as e:
            raise InjectError(str(e)) from None
    return bytes(ctx)
