"""Fresh state: every map of the filter is empty at the start of each test, whatever its type, so a
verdict never depends on which test ran before. Two tests in one session share the loaded program."""


FILTER = r"""
struct lpm_key { __u32 prefixlen; __u32 addr; };
BPF_HASH(h, __u32, __u64, 16);
BPF_ARRAY(a, __u64, 4);
BPF_PERCPU_ARRAY(pa, __u64, 4);
BPF_TABLE("lru_hash", __u32, __u64, lru, 16);
BPF_LPM_TRIE(lpm, struct lpm_key, __u64, 16);
BPF_QUEUE(q, __u32, 16);
BPF_STACK(st, __u32, 16);
BPF_DEVMAP(dm, 4);
BPF_CPUMAP(cm, 2);
BPF_PROG_ARRAY(jmp, 2);
BPF_RINGBUF_OUTPUT(rb, 1);

int other(struct xdp_md *ctx) { return XDP_PASS; }

int fill(struct xdp_md *ctx)
{
	__u32 k = 1, e = 5;
	__u64 v = 7, *x;
	struct lpm_key lk = {32, 0x01020304};
	h.update(&k, &v);
	lru.update(&k, &v);
	x = a.lookup(&k);
	if (x)
		*x = 7;
	x = pa.lookup(&k);
	if (x)
		*x = 7;
	lpm.update(&lk, &v);
	q.push(&e, 0);
	st.push(&e, 0);
	rb.ringbuf_output(&e, sizeof(e), 0);
	return XDP_PASS;
}
"""

TESTS = f"""
import ctypes, mmap, struct, pytest
from scapy.layers.inet import IP, UDP
from pktassert import Verdict
pytestmark = pytest.mark.xdp({FILTER!r}, func="fill")

def ring_pending(xdp):
    # The ring's positions, read as the kernel lays them out: consumer page, then producer page.
    fd, page = xdp.loaded.map_fds()["rb"], mmap.PAGESIZE
    with mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0) as c, \
            mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page) as p:
        return struct.unpack("Q", p[:8])[0] - struct.unpack("Q", c[:8])[0]

def peek(xdp, name):
    # A queue's or stack's head, as the kernel's lookup with no key gives it (bcc's peek()).
    from pktassert.kernel import libbpf
    value = ctypes.c_uint32()
    if libbpf.lib().bpf_map_lookup_elem(xdp.loaded.map_fds()[name], None, ctypes.byref(value)) != 0:
        raise KeyError(name)
    return value.value

@pytest.mark.parametrize("n", [1, 2])
def test_every_map_starts_empty(xdp, inject, n):
    tables = xdp.loaded.state_maps()
    assert len(xdp.map("h")) == 0 and len(xdp.map("lru")) == 0 and len(xdp.map("lpm")) == 0
    assert xdp.map("a")[1] == 0 and all(v == 0 for v in xdp.map("pa")[1])
    for name in ("q", "st"):
        with pytest.raises(KeyError):
            peek(xdp, name)
    for name in ("dm", "cm"):
        with pytest.raises(KeyError):
            tables[name][ctypes.c_uint32(0)]
    assert ring_pending(xdp) == 0
    assert inject(IP(dst=xdp.ip) / UDP(dport=9)).verdict == Verdict.PASS   # fills what the filter fills
    xdp.map("dm")[0] = 1                  # lo, in the test's own namespace
    xdp.map("cm")[0] = 192                # a queue size for CPU 0
    xdp.map("jmp")[0] = "other"
    assert len(xdp.map("h")) == 1 and peek(xdp, "q") == 5 and ring_pending(xdp) > 0
    assert xdp.map("dm")[0] == 1
"""


def test_every_map_type_is_fresh_for_each_test(pytester, pktassert_ready):
    pytester.makepyfile(test_state=TESTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pktassert-tier=both", "-p", "no:randomly")
    res.assert_outcomes(passed=4)
