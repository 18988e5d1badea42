"""Packets at the edges a filter draws (pktassert/traffic/boundaries.py), mined from real rule sets and BPF
programs, sent through the real kernel: an off-by-one port range caught by comparing two rule sets live,
a bpf_htons(23) mined back as port 23, named interval sets and prefixes, and what a bad input leaves."""

import os
import shutil
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pktassert import Fate, LibbpfSource, ProgramError, Session, Verdict
from pktassert.build import libbpf_build
from pktassert.netns import leftovers
from pktassert.traffic.boundaries import Edge, boundaries, edges
from pktassert.traffic.source import Traffic

HERE = Path(__file__).resolve().parent / "boundaries"
INTENDED, CHANGED = HERE / "ports_intended.nft", HERE / "ports_changed.nft"  # 1000-1999 dropped; 1000-2000 (a bug)
SETS = HERE / "sets.nft"
TELNET = HERE / "telnet.bpf.c"  # drops TCP to bpf_htons(23)
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, nftables, BPF")
clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")


def _frames(traffic: Traffic) -> list[Ether]:
    (part,) = traffic.parts
    return [Ether(f) for f in part.packets]


def _fates(session: Session, rules: Path, frames: list[bytes]) -> list[Fate]:
    """Each frame's fate through the DUT's stack with ``rules`` loaded (live tier: a fresh namespace)."""
    dut = session.dut(nftables=rules)
    try:
        cap = dut.inject(frames)
        return [cap[i].fate for i in range(len(cap))]
    finally:
        dut.close()


def _held() -> dict[str, str]:
    """What this process's fds are (namespaces and sockets among them): a namespace or a netlink socket left
    open would show here."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the fd listdir itself used, now closed
    return out


@root
@pytest.mark.usefixtures("pktassert_ready")
def test_an_off_by_one_port_range_is_caught_by_its_boundary_packets():
    traffic = boundaries(INTENDED)
    frames = _frames(traffic)
    ports = {p[TCP].dport for p in frames if TCP in p}
    assert {999, 1000, 1999, 2000} <= ports and {21, 22, 23} <= ports
    assert {p[IP].src for p in frames} >= {"198.51.99.255", "198.51.100.0", "198.51.100.255", "198.51.101.0"}
    assert traffic.parts[0].label == "boundaries of ports_intended.nft (4 edges)"

    raw = [bytes(p) for p in frames]
    with Session(tier="live") as s:
        meant, changed = _fates(s, INTENDED, raw), _fates(s, CHANGED, raw)
    differ = [i for i, (a, b) in enumerate(zip(meant, changed)) if a != b]
    assert differ == [i for i, p in enumerate(frames) if p[TCP].dport == 2000] != []
    assert {meant[i] for i in differ} == {Fate.ANSWERED} and {changed[i] for i in differ} == {Fate.NETFILTER_DROPPED}
    assert {meant[i] for i, p in enumerate(frames) if 1000 <= p[TCP].dport <= 1999} == {Fate.NETFILTER_DROPPED}


@root
def test_the_edges_say_what_they_were_mined_from():
    found = edges(INTENDED)
    assert found[0] == Edge("tcp dport", "==", "1000-1999", (999, 1000, 1999, 2000),
                            "rule 'tcp dport 1000-1999 drop' (inet edge input, handle 2)")
    assert [(e.field, e.op, e.value) for e in found[1:]] == [("tcp dport", "==", "22"),
                                                            ("ip saddr", "==", "198.51.100.0/24"),
                                                            ("tcp dport", "==", "22")]


@root
@pytest.mark.usefixtures("pktassert_ready")
def test_a_named_interval_set_and_a_prefix_give_their_edges_and_sources():
    by_value = {e.value: e.values for e in edges(SETS)}
    assert by_value == {
        "198.51.100.16/28": ("198.51.100.15", "198.51.100.16", "198.51.100.31", "198.51.100.32"),
        "203.0.113.10-203.0.113.20": ("203.0.113.9", "203.0.113.10", "203.0.113.20", "203.0.113.21"),
        "2001:db8:1::/48": ("2001:db8:0:ffff:ffff:ffff:ffff:ffff", "2001:db8:1::",
                            "2001:db8:1:ffff:ffff:ffff:ffff:ffff", "2001:db8:2::"),
    }
    frames = _frames(boundaries(SETS))
    sources = [p[IP].src if IP in p else p[IPv6].src for p in frames]
    assert sources == [v for values in by_value.values() for v in values]
    assert all(IPv6 in p for p in frames[-4:]) and all(IP in p for p in frames[:-4])

    with Session(tier="live") as s:
        fates = _fates(s, SETS, [bytes(p) for p in frames])
    inside = [i % 4 in (1, 2) for i in range(len(frames))]  # each edge: below, first, last, above
    assert [f == Fate.NETFILTER_DROPPED for f in fates] == inside


@root
@clang
@pytest.mark.usefixtures("pktassert_ready")
def test_a_bpf_object_comparing_with_bpf_htons_23_gives_ports_22_to_24():
    obj, _ = libbpf_build.compile_source(TELNET, ())
    for source, func in ((obj, None), (TELNET, "telnet_guard"), (LibbpfSource(TELNET, "telnet_guard"), None)):
        found = [e for e in edges(source, func) if e.field == "port" and e.value == "23"]
        assert [e.values for e in found] == [(22, 23, 24)]
        assert found[0].op == "==" and "byte-swapped" in found[0].where and "telnet_guard() instruction" in found[0].where
    traffic = boundaries(obj)
    frames = _frames(traffic)
    assert traffic.parts[0].label.startswith(f"boundaries of {obj.name} telnet_guard() (")
    for layer in (TCP, UDP):
        assert {p[layer].dport for p in frames if layer in p} >= {22, 23, 24}
        assert {p[layer].sport for p in frames if layer in p} >= {22, 23, 24}
    with Session(tier="unit") as s:
        dut = s.dut(xdp=LibbpfSource(TELNET, "telnet_guard"))
        cap = dut.inject(list(traffic.parts[0].packets))
        dropped = [p for i, p in enumerate(frames) if cap[i] == Verdict.DROP]
        dut.close()
    assert dropped and all(TCP in p and p[TCP].dport == 23 for p in dropped)
    assert len(dropped) == sum(TCP in p and p[TCP].dport == 23 for p in frames)


@root
@pytest.mark.usefixtures("pktassert_ready")
def test_a_bcc_source_is_mined_as_bcc_compiles_it():
    pytest.importorskip("bcc", reason="needs bcc: apt-get install python3-bpfcc")
    example = Path(__file__).resolve().parent.parent / "examples" / "port_blocklist.c"
    found = {(e.field, e.value) for e in edges(example, "port_blocklist")}
    assert {("port", "23"), ("port", "445"), ("port", "3389")} <= found


@root
def test_a_template_shapes_the_packets():
    syn_ack = IP(dst="192.0.2.1", ttl=7) / TCP(flags="SA", window=1234)
    frames = _frames(boundaries("table ip t { chain c { tcp dport 80 drop; }; }", template=syn_ack))
    assert [(p[TCP].dport, p[TCP].flags, p[TCP].window, p[IP].ttl) for p in frames] == \
        [(79, "SA", 1234, 7), (80, "SA", 1234, 7), (81, "SA", 1234, 7)]


@pytest.mark.parametrize(("name", "text", "said"), [
    ("notes.txt", b"hello\n", "neither an nftables rule set nor a BPF filter"),
    ("missing.nft", None, "no such file"),
    ("f.c", b"int f(struct xdp_md *ctx) { return 2; }", "of a C source needs func=, its entry function"),
    ("x.o", b"not elf", "is not an ELF object"),
])
def test_a_bad_file_gives_one_clear_error(tmp_path, name, text, said):
    if text is not None:
        (tmp_path / name).write_bytes(text)
    with pytest.raises(ProgramError) as e:
        boundaries(tmp_path / name)
    assert said in str(e.value) and "Fix:" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if text is not None else [])  # nothing left beside it


@root
@clang
def test_an_object_without_the_function_lists_its_programs():
    obj, _ = libbpf_build.compile_source(TELNET, ())
    with pytest.raises(ProgramError, match=r"has no function 'nope'.*its programs: telnet_guard\(\) in SEC\(\"xdp\"\)"):
        edges(obj, "nope")


@root
def test_a_rule_set_that_does_not_load_leaves_no_namespace_and_no_socket():
    before = _held()
    with pytest.raises(ProgramError) as e:
        boundaries("table inet t { chain c { tcp dport 1000-1999 drpo; }; }")
    assert str(e.value).startswith("nftables rejects the rule set text:") and "Fix:" in str(e.value)
    assert e.value.__cause__ is None and e.value.__context__ is None  # one error, nothing chained to it
    assert _held().items() <= before.items()  # no new fd: no namespace, no netlink socket still bound to one
    boundaries(INTENDED)
    assert _held().items() <= before.items()
    assert [lo for lo in leftovers.find() if lo.owner_pid == os.getpid()] == []  # none of ours held elsewhere
