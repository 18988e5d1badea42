"""Regression testing as users mean it: what changed between two releases of a filter, on every packet of
a sweep nobody wrote by hand, asserted exactly (pktassert.compare runs both releases in the kernel)."""

from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP

from pktassert import DUT_IP, Traffic, compare

HERE = Path(__file__).resolve().parent
EVERY_PORT = Traffic.flood(IP(dst=DUT_IP) / TCP(), 65536, {"dport": (0, 65535)}) | \
    Traffic.flood(IP(dst=DUT_IP) / UDP(), 65536, {"dport": (0, 65535)})


def test_the_new_blocklist_blocks_rdp_and_changes_nothing_else():
    diff = compare(HERE / "versions" / "port_blocklist.v1.bpf.c", HERE / "port_blocklist.bpf.c", EVERY_PORT,
                   func="port_blocklist")
    assert diff.only(dport=3389) and len(diff) == 2, diff  # TCP and UDP to 3389, of 131,072 packets
    (change,) = diff.classes
    assert (change.a.verdict, change.b.verdict) == ("PASS", "DROP")


def test_the_new_edge_firewall_closes_ssh_to_all_but_the_admin_network():
    # SSH from the admin network and from outside it; HTTPS and a closed port from outside: live, through
    # the DUT's stack, so each answer is the packet's fate and the rule that decided it.
    ssh = Traffic.flood(IP(dst=DUT_IP) / TCP(dport=22, flags="S"), 64, {"src": "198.51.100.0/26"}) | \
        Traffic.flood(IP(dst=DUT_IP) / TCP(dport=22, flags="S"), 64, {"src": "203.0.113.0/26"})
    other = Traffic.flood(IP(dst=DUT_IP, src="203.0.113.7") / TCP(flags="S"), 2, {"dport": [443, 8080]})
    diff = compare(HERE / "versions" / "edge_firewall.v1.nft", HERE / "edge_firewall.nft", ssh | other)
    assert diff.only(dport=22, src="203.0.113.0/26") and len(diff) == 64, diff
    (change,) = diff.classes
    assert change.fields == {"src": "203.0.113.0/26", "dport": "22"}, diff  # what defines the class, found
    assert change.a.rule == "tcp dport 22 accept" and change.b.fate == "NETFILTER_DROPPED", diff
    assert change.b.rule is not None and "!= 198.51.100.0/24 drop" in change.b.rule, diff


def test_packets_at_the_new_firewalls_edges_find_the_ssh_change_by_themselves():
    # Nobody wrote these packets: they are mined from the rule set, on each side of each edge it draws
    # (each port, prefix and set element); compare() runs them through both releases.
    from pktassert import strategies as st

    edges = st.boundaries(HERE / "edge_firewall.nft")
    diff = compare(HERE / "versions" / "edge_firewall.v1.nft", HERE / "edge_firewall.nft", edges)
    assert diff.only(TCP, dport=22) and len(diff) == 2, diff  # the sources just outside 198.51.100.0/24
    assert sorted(p[IP].src for p in diff.packets()) == ["198.51.101.0", "198.51.99.255"], diff
    assert not any(p[IP].src.startswith("198.51.100.") for p in diff.packets()), diff  # the admin network kept SSH
    assert {c.b.fate for c in diff.classes} == {"NETFILTER_DROPPED"}, diff
