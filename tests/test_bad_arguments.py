"""Arguments a user can get wrong give one clear error naming the cause and the fix: never a raw
traceback, never a silent coercion (a wrapped map key tests another rule than the one written)."""

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import InjectError, PktassertError, Verdict

MAPS = """
BPF_HASH(ports, __u16, __u8, 16);
struct pair { __u8 a; __u16 b; };
BPF_HASH(pairs, struct pair, __u32, 16);
int pass_all(struct xdp_md *ctx) { return XDP_PASS; }
"""

pytestmark = [pytest.mark.xdp(MAPS, func="pass_all"), pytest.mark.parametrize("tier", ["unit"], indirect=True)]


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 3, "keep": 0}, r"keep=0: give how many per-packet records to keep"),
    ({"count": 3, "keep": -1}, r"keep=-1: give how many"),
    ({"count": 3, "rate": "fast"}, r"rate='fast': give packets per second, a number"),
    ({"count": 3, "seed": 7}, r"seed=7 draws vary= values at random; without vary= it would do nothing"),
    ({"count": True}, r"count=True: give a positive whole number"),
    ({"rate": 10, "duration": "1s"}, r"duration='1s': give seconds"),
])
def test_inject_arguments(xdp, inject, kwargs, message):
    with pytest.raises(InjectError, match=message):
        inject(IP(dst=xdp.ip) / UDP(dport=9), **kwargs)


def test_cost_repeat_must_be_positive(xdp):
    with pytest.raises(InjectError, match=r"cost\(repeat=-1\): give how many runs"):
        xdp.cost(IP(dst=xdp.ip) / UDP(dport=9), repeat=-1)


def test_count_of_something_that_is_not_a_verdict(xdp, inject):
    r = inject(IP(dst=xdp.ip) / UDP(dport=9))
    with pytest.raises(PktassertError, match=r"count\(7\): not a verdict"):
        r.count(7)
    assert r.count(Verdict.PASS) == 1


def test_where_with_flags_that_are_not_tcp_flags(xdp, inject):
    r = inject(IP(dst=xdp.ip) / TCP(dport=9, flags="S"))
    with pytest.raises(PktassertError, match=r"where\(flags='Q'\): TCP flags are letters"):
        r.where(flags="Q")
    assert len(r.where(flags="S")) == 1


@pytest.mark.parametrize("key, value, message", [
    (70000, 1, r"ports key: 70000 does not fit c_ushort \(2 bytes\): it takes 0..65535"),
    (-1, 1, r"ports key: -1 does not fit c_ushort"),
    (80, 300, r"ports value: 300 does not fit c_ubyte \(1 bytes\): it takes 0..255"),
    (b"\x00\x50\x00", 1, r"ports key: 3 bytes for c_ushort \(2 bytes\)"),
    ("80", 1, r"ports key: '80' is not a whole number"),
])
def test_map_writes_that_would_wrap_are_refused(xdp, key, value, message):
    with pytest.raises(PktassertError, match=message):
        xdp.map("ports")[key] = value
    assert len(xdp.map("ports")) == 0          # nothing was written


def test_struct_keys_are_checked_field_by_field(xdp):
    pairs = xdp.map("pairs")
    pairs[(1, 2)] = 3
    assert len(pairs) == 1
    with pytest.raises(PktassertError, match=r"pairs key.b: 70000 does not fit"):
        pairs[(1, 70000)] = 3
    with pytest.raises(PktassertError, match=r"pairs key: 1 values for struct pair of 2 fields \(a, b\)"):
        pairs[1] = 3
