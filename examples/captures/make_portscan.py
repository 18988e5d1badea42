"""Write portscan.pcap: a SYN scan of ports 1-1024 from one host, with ordinary traffic around it.

Made here, not downloaded: `python examples/captures/make_portscan.py` writes the same bytes each time.
"""

from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

SCANNER, CLIENT, SERVER = "203.0.113.66", "198.51.100.20", "192.0.2.1"
MACS = {"src": "02:00:5e:00:53:02", "dst": "02:00:5e:00:53:01"}


def packets() -> list:
    out, t = [], 1_700_000_000.0
    for port in range(1, 1025):
        if port % 64 == 0:  # a client's web and DNS traffic goes on meanwhile
            out.append(Ether(**MACS) / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000 + port, dport=443, flags="A"))
            out.append(Ether(**MACS) / IP(src=CLIENT, dst=SERVER) / UDP(sport=5353, dport=53) / b"\x12\x34")
        out.append(Ether(**MACS) / IP(src=SCANNER, dst=SERVER, ttl=52) / TCP(sport=61000, dport=port, flags="S", seq=port))
    for i, p in enumerate(out):
        p.time = t + i * 0.0001  # 100 microseconds apart
    return out


if __name__ == "__main__":
    wrpcap(str(Path(__file__).with_name("portscan.pcap")), packets())
