"""The port blocklist as its Makefile builds it (build/port_blocklist.bpf.o), configured the way its
loader would: a const volatile global set before load, and a port added to its map at run time."""

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Verdict

pytestmark = pytest.mark.xdp("build/port_blocklist.bpf.o", func="port_blocklist", globals={"extra_port": 8443})


def test_extra_port_set_before_load(xdp, inject):
    result = inject([IP(dst=xdp.ip) / TCP(dport=p, flags="S") for p in (8443, 8444, 23)])
    assert result.verdicts == [Verdict.DROP, Verdict.PASS, Verdict.DROP]
    assert xdp.globals["extra_port"] == 8443


def test_map_typed_from_btf(xdp, inject):
    ports = xdp.map("blocked_ports")
    ports[8444] = 1
    assert dict(ports.items()) == {8444: 1}
    assert inject(IP(dst=xdp.ip) / TCP(dport=8444, flags="S")).verdict == Verdict.DROP
    with pytest.raises(ValueError, match="70000 does not fit"):
        ports[70000] = 1
