"""The ``pktassert`` command line, run as a user runs it (a subprocess), the kernel running every filter."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from pktassert.netns.topology import DUT_IP, DUT_MAC, PEER_MAC

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BLOCKLIST = str(EXAMPLES / "port_blocklist.bpf.c")   # blocks dports 23, 135, 445, 3389 (libbpf source)
FIREWALL = str(EXAMPLES / "edge_firewall.nft")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, BPF): run pytest as root")
ready = pytest.mark.usefixtures("pktassert_ready")  # skips naming whatever else this host lacks (bcc, headers, ...)
needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed: apt-get install tshark")


def pktassert(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``pktassert ARGS``; it must exit with ``code`` and never show a traceback."""
    done = subprocess.run([sys.executable, "-m", "pktassert.cli", *args], capture_output=True, text=True, timeout=180)
    if done.returncode == 3 and code != 3:  # the host lacks something (the kernel's BTF, ...): the CLI said which
        pytest.skip(done.stderr.strip().removeprefix("pktassert: "))
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """A user error: nothing on stdout, one line on stderr naming the fix."""
    lines = done.stderr.splitlines()
    assert done.stdout == "" and len(lines) == 1 and lines[0].startswith("pktassert: "), done.stderr
    assert "Fix: " in lines[0], lines[0]
    return lines[0]


def write_pcap(path: Path, packets: list) -> Path:
    wrpcap(str(path), [Ether(src=PEER_MAC, dst=DUT_MAC) / p for p in packets])
    return path


def tshark(path: Path, *fields: str) -> list[list[str]]:
    args = [x for f in fields for x in ("-e", f)]
    done = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


@pytest.mark.parametrize("tier", ["live", "unit"])
@needs_root
@ready
@needs_clang
def test_probe_json_gives_each_packets_verdict_and_parsed_fields(tier):
    done = pktassert("probe", BLOCKLIST, "--func", "port_blocklist", "--tier", tier, "--json",
                     "--packet", "IP(dst=DUT)/TCP(dport=23)", "--packet", "IP(dst=DUT)/TCP(dport=80)")
    doc = json.loads(done.stdout)
    telnet, web = doc["packets"]
    assert (telnet["verdict"], web["verdict"]) == ("DROP", "PASS") and doc["counts"] == {"DROP": 1, "PASS": 1}
    assert telnet["parsed"] == {"len": 54, "ethertype": 0x800, "proto": 6, "ttl": 64, "sport": 20, "dport": 23,
                                "flags": "S", "src": "192.0.2.2", "dst": DUT_IP}
    assert web["parsed"]["dport"] == 80 and telnet["expression"] == "IP(dst=DUT)/TCP(dport=23)"
    if tier == "live":  # the whole stack behind the filter: what became of each packet
        assert (telnet["fate"], web["fate"], web["reason"], web["answer"]) == ("FILTER_DROPPED", "ANSWERED", "NO_SOCKET", "RST")
    else:
        assert "fate" not in telnet


@needs_root
@ready
@needs_clang
def test_probe_prints_an_aligned_table():
    done = pktassert("probe", BLOCKLIST, "--func", "port_blocklist", "--tier", "unit",
                     "--packet", "IP(dst=DUT)/TCP(dport=[23, 80])")   # scapy's implicit packets: one per port
    head, columns, telnet, web = done.stdout.splitlines()
    assert head == f"{BLOCKLIST} (port_blocklist at xdp), unit tier: DROP=1 PASS=1"
    assert columns.split() == ["#", "verdict", "packet", "parsed", "by", "the", "inspector"]
    assert telnet.split()[:2] == ["0", "DROP"] and "dport=23 flags=S" in telnet
    assert web.split()[:2] == ["1", "PASS"] and "dport=80 flags=S" in web
    assert columns.index("packet") == telnet.index("Ether") == web.index("Ether")  # aligned


@needs_root
@ready
def test_probe_of_a_rule_set_names_each_packets_fate_and_rule():
    done = pktassert("probe", FIREWALL, "--json",
                     "--packet", 'IP(src="198.51.100.7", dst=DUT)/TCP(dport=22)',  # SSH from the admin network
                     "--packet", 'IP(src="203.0.113.9", dst=DUT)/TCP(dport=22)',   # SSH from elsewhere
                     "--packet", "IP(dst=DUT)/UDP(dport=53)")                       # nothing allows it
    admin, outsider, dns = json.loads(done.stdout)["packets"]
    assert {p["verdict"] for p in (admin, outsider, dns)} == {"PASS"}  # pktassert's pass-through XDP stage
    assert (admin["fate"], admin["rule"], admin["answer"]) == ("ANSWERED", "tcp dport 22 ip saddr 198.51.100.0/24 accept", "RST")
    assert (outsider["fate"], outsider["reason"], outsider["rule"]) == \
        ("NETFILTER_DROPPED", "NETFILTER_DROP", "tcp dport 22 ip saddr != 198.51.100.0/24 drop")
    assert (dns["fate"], dns["rule"], dns["chain"]) == ("NETFILTER_DROPPED", "policy drop", "inet edge input")


@needs_root
@ready
@needs_clang
@needs_tshark
def test_replay_counts_verdicts_and_fates_and_writes_the_evidence(tmp_path):
    ports = [22, 23, 80, 445, 8080]
    capture = write_pcap(tmp_path / "scan.pcap", [IP(src="198.51.100.7", dst=DUT_IP) / TCP(dport=p, flags="S") for p in ports])
    out = tmp_path / "evidence" / "replay.pcapng"
    done = pktassert("replay", BLOCKLIST, str(capture), "--func", "port_blocklist", "--pcapng", str(out))
    blocks = done.stdout.split("\n\n")
    assert blocks[0].endswith("live tier: 5 packets sent, 5 accounted for")
    assert blocks[1].splitlines() == ["verdict  packets", "DROP           2", "PASS           3"]
    assert blocks[2].splitlines()[0] == "fate            packets" and "FILTER_DROPPED        2" in blocks[2]
    assert blocks[-1] == f"wrote 5 packets with their verdicts to {out}\n"
    # The plugin's own evidence format: each packet in send order, its verdict in the EPB option and a comment.
    rows = tshark(out, "tcp.dstport", "frame.verdict.ebpf_xdp", "frame.comment")
    assert [int(r[0]) for r in rows] == ports
    for i, (port, verdict, comment) in enumerate(rows):
        said = "DROP" if port in ("23", "445") else "PASS"
        assert verdict == ("1" if said == "DROP" else "2")
        assert f"packet #{i}; verdict {said} (live tier)" in comment and "fate " in comment, comment


@pytest.fixture
def changed_blocklist(tmp_path):
    """The example blocklist with one blocked port changed: 135 is let through, 136 blocked instead."""
    source = Path(BLOCKLIST).read_text()
    assert "\tcase 135:" in source
    changed = tmp_path / "port_blocklist.bpf.c"
    changed.write_text(source.replace("\tcase 135:", "\tcase 136:"))
    return changed


@needs_root
@ready
@needs_clang
@needs_tshark
def test_diff_of_two_versions_names_the_changed_ports_class(tmp_path, changed_blocklist):
    capture = write_pcap(tmp_path / "ports.pcap", [IP(dst=DUT_IP) / TCP(dport=p) for p in (22, 135, 136, 445)] +
                         [IP(dst=DUT_IP) / UDP(dport=p) for p in (135, 136)])
    out = tmp_path / "differ.pcapng"
    done = pktassert("diff", BLOCKLIST, str(changed_blocklist), "--func", "port_blocklist", "--pcap", str(capture),
                     "--generate", "20000", "--seed", "1", "--json", "--pcapng", str(out), code=1)
    doc = json.loads(done.stdout)
    assert (doc["packets"], doc["tier"], doc["seed"]) == (20_006, "unit", 1)
    by_port = {c["fields"]["dport"]: c for c in doc["classes"]}
    assert sorted(by_port) == ["135", "136"]   # exactly the changed port's classes, whatever else the flood held
    assert (by_port["135"]["a"]["verdict"], by_port["135"]["b"]["verdict"]) == ("DROP", "PASS")
    assert (by_port["136"]["a"]["verdict"], by_port["136"]["b"]["verdict"]) == ("PASS", "DROP")
    assert doc["differing"] == sum(c["count"] for c in doc["classes"]) >= 4 and doc["pcapng"]["packets"] == doc["differing"]
    rows = tshark(out, "frame.comment")
    assert len(rows) == doc["differing"]
    assert rows[0][0] == f"pktassert compare: packet #1: A ({BLOCKLIST}): DROP; B ({changed_blocklist}): PASS"
    # The same seed, the same flood: the same result.
    again = json.loads(pktassert("diff", BLOCKLIST, str(changed_blocklist), "--func", "port_blocklist", "--pcap",
                                 str(capture), "--generate", "20000", "--seed", "1", "--json", code=1).stdout)
    assert again["classes"] == doc["classes"]


@needs_root
@ready
@needs_clang
def test_diff_of_a_file_with_itself_finds_nothing(tmp_path):
    capture = write_pcap(tmp_path / "ports.pcap", [IP(dst=DUT_IP) / TCP(dport=p) for p in (22, 23, 80)])
    done = pktassert("diff", BLOCKLIST, BLOCKLIST, "--func", "port_blocklist", "--pcap", str(capture),
                     "--generate", "5000", "--seed", "3")
    traffic, verdict = done.stdout.splitlines()
    assert traffic == f"traffic: {capture}, 5,000 generated (--seed 3)"
    assert verdict.startswith("no difference: 5,003 packets answered alike")


@needs_root
@ready
@needs_clang
def test_diff_of_a_large_flood_reports_progress_in_chunks_and_exact_totals(changed_blocklist):
    done = pktassert("diff", BLOCKLIST, str(changed_blocklist), "--func", "port_blocklist", "--generate", "200002",
                     "--seed", "5", "--progress", "--json", code=1)
    doc = json.loads(done.stdout)
    assert doc["packets"] == 200_002 and [p["packets"] for p in doc["traffic"]] == [100_000, 1, 100_000, 1]
    sent = [f"pktassert diff: {side}: sent {n} of 200,002" for side in "AB"
            for n in ("100,000", "100,001", "200,001", "200,002")]
    assert done.stderr.splitlines() == sent


@needs_root
@ready
@needs_clang
def test_a_wrong_entry_function_is_one_line_naming_the_functions_there():
    line = one_error_line(pktassert("probe", BLOCKLIST, "--func", "port_blocklist_v2", "--packet", "IP(dst=DUT)/TCP()", code=2))
    assert "has no program named 'port_blocklist_v2'" in line and "Fix: --func one of those function names" in line
    assert "port_blocklist()" in line


@needs_root
@ready
@needs_clang
def test_a_verifier_rejection_is_a_user_error_with_the_verifiers_words(tmp_path):
    source = tmp_path / "unchecked.bpf.c"
    source.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n\nSEC("xdp")\nint unchecked(struct xdp_md *ctx)\n'
                      "{\n\tvoid *data = (void *)(long)ctx->data;\n"
                      "\treturn *(unsigned char *)(data + 20) ? XDP_DROP : XDP_PASS;   /* no check against data_end */\n}\n"
                      'char LICENSE[] SEC("license") = "GPL";\n')
    done = pktassert("probe", str(source), "--func", "unchecked", "--tier", "unit", "--packet", "IP(dst=DUT)/TCP()", code=2)
    # The verifier's own lines follow the first: a user needs them to fix the filter.
    assert done.stdout == "" and done.stderr.startswith(f"pktassert: the verifier rejected unchecked() from {source}")
    assert f"at {source.name}:8: " in done.stderr and "Fix: compare the pointer" in done.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["probe", "/nonexistent/filter.bpf.c", "--func", "f"], "/nonexistent/filter.bpf.c: no such file"),
    (["probe", str(EXAMPLES.parent / "README.md"), "--func", "f"], "README.md is neither C, an ELF object nor a rule set"),
    (["probe", BLOCKLIST], "is a BPF filter: which function is its entry? Fix: --func NAME"),
    (["probe", str(EXAMPLES / "build" / "port_blocklist.bpf.o")], "which function is its entry? Fix: --func NAME"),
    (["probe", FIREWALL, "--tier", "unit"], "is a rule set, which only the live tier's kernel stack judges. Fix: --tier live"),
    (["diff", BLOCKLIST, BLOCKLIST, "--func", "f"], "diff: no traffic to compare them on"),
    (["diff", BLOCKLIST, BLOCKLIST, "--func", "f", "--func-a", "g", "--generate", "1"], "--func is for both sides"),
])
def test_a_bad_file_or_option_is_one_line_before_anything_is_loaded(args, said):
    packet = ["--packet", "IP(dst=DUT)/TCP()"] if args[0] == "probe" else []
    assert said in one_error_line(pktassert(*args, *packet, code=2))


@pytest.mark.parametrize(("expr", "said"), [
    ("IP(dst=DUT)/TPC(dport=23)", "unknown name TPC (did you mean TCP?)"),
    ("IP(dst=DUT)/TCP(dport=23", "not an expression ('(' was never closed)"),
    ("IP(dst=DUT)/TCP(dprt=23)", "scapy refused it (no field dprt)"),
    ('open("/etc/passwd")', "unknown name open"),                 # no builtins
    ("IP().__class__", "__class__ is no packet's"),
    ("23", "makes 23 (int), not packets"),
])
def test_a_bad_packet_expression_is_one_line_naming_the_fix(expr, said):
    line = one_error_line(pktassert("probe", BLOCKLIST, "--func", "port_blocklist", "--packet", expr, code=2))
    assert line.startswith(f"pktassert: --packet {expr!r}: ") and said in line
    assert line.endswith("Fix: a scapy expression such as 'IP(dst=DUT)/TCP(dport=23)' (names: scapy's layers, DUT, DUT6, "
                         "PEER, PEER6).")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop root")
def test_without_root_it_says_so_and_exits_3():
    cmd = [sys.executable, "-m", "pktassert.cli", "probe", BLOCKLIST, "--func", "port_blocklist", "--packet", "IP()"]
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd], capture_output=True,
                          text=True, timeout=120, cwd="/")
    assert (done.returncode, done.stdout, done.stderr) == (3, "", "pktassert: needs root (network namespaces, BPF)\n")


def test_cleanup_passes_its_arguments_to_pktassert_cleanup():
    assert pktassert("cleanup", "--help").stdout.startswith("usage: pktassert-cleanup [-h] [--dry-run]")
    assert "pktassert-cleanup: error: unrecognized arguments: --bogus" in pktassert("cleanup", "--bogus", code=2).stderr
    # Only cleanup takes arguments it does not know: the other commands refuse them.
    assert "pktassert: error: unrecognized arguments: --bogus" in pktassert("diff", "a", "b", "--bogus", code=2).stderr
