import time, pytest
from pathlib import Path
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether, ARP
from pktassert import LibbpfSource
from pktassert.verdict import TcVerdict

TP = Path(__file__).resolve().parent / "third_party"
PLF = TP / "bpf-examples/pkt-loop-filter/pkt-loop-filter.kern.c"
INC = (f"-I{TP / 'bpf-examples/include'}", f"-I{TP / 'include-shim'}")

@pytest.fixture
def tc_program():
    return LibbpfSource(PLF, "filter_ingress_pkt", INC, hook="tc")

@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
def test_trial(tc, inject):
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    print(tc, tc.ifindex, tc.peer.mac, tc.globals)
    st = tc.map("iface_state")
    st[{"src_mac": bytes.fromhex(tc.peer.mac.replace(":", "")), "src_vlan": 0}] = {"expiry_time": now + 10**10, "lock_time": 0, "ifindex": 3, "drops": 0}
    print(dict(st.items()))
    c = inject([IP(dst=tc.ip) / UDP(dport=53), Ether(src="02:00:00:00:00:09", dst=tc.mac) / IP(dst=tc.ip) / UDP(dport=53),
                Ether(dst="ff:ff:ff:ff:ff:ff")/ARP(psrc="198.51.100.1", pdst="198.51.100.2")])
    print(c.verdicts, [r.ret for r in c])
    print(dict(st.items()))
    assert 0
