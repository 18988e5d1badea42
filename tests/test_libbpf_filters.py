"""libbpf sources and objects under test: what real libbpf filters use works as their loader sets it
up, in both tiers, with maps typed from BTF and state fresh for every test."""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pktassert import LibbpfSource, ObjectFile, Verdict
from pktassert.build import libbpf_build

HERE = Path(__file__).parent / "libbpf"
SOURCE = HERE / "features.bpf.c"
pytestmark = [pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang"),
              pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)]


@pytest.fixture(scope="session")
def features_object(tmp_path_factory) -> Path:
    """features.bpf.c built the way a Makefile builds it."""
    out = tmp_path_factory.mktemp("obj") / "features.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", *libbpf_build.include_dirs(),
                    "-c", str(SOURCE), "-o", str(out)], check=True)
    return out


@pytest.fixture(params=["source", "object"])
def xdp_program(request, features_object):
    tail = getattr(request.node.get_closest_marker("tail_port"), "args", (0,))[0]
    globals_ = (("tail_port", tail),) if tail else ()
    if request.param == "source":
        return LibbpfSource(SOURCE, "features", globals=globals_)
    return ObjectFile(features_object, "features", globals=globals_)


def test_struct_keys_and_values_as_plain_python(xdp, inject):
    inject(IP(src="198.51.100.7", dst=xdp.ip) / UDP(sport=1, dport=53) / (b"x" * 10), count=3)
    flows = dict(xdp.map("flows").items())
    assert len(flows) == 1
    (key, value), = flows.items()
    assert (key.saddr, key.daddr, key.dport, key.proto) == ("198.51.100.7", xdp.ip, 53, 17)
    assert value.packets == 3 and value.action == 2 and value.last_len == 14 + 20 + 8 + 10
    # A struct key given as a dict, an address as text.
    seeded = {"saddr": "203.0.113.1", "daddr": xdp.ip, "dport": 80, "proto": 6, "pad": 0}
    xdp.map("flows")[seeded] = {"packets": 5, "last_len": 60, "action": 1}
    assert xdp.map("flows")[seeded].packets == 5
    assert "203.0.113.1" in repr(xdp.map("flows"))


def test_lpm_trie_keyed_by_prefix_text(xdp, inject):
    xdp.map("deny_src")["203.0.113.0/24"] = 1
    c = inject([IP(src=s, dst=xdp.ip) / UDP(dport=9) for s in ("203.0.113.9", "198.51.100.9")])
    assert c.verdicts == [Verdict.DROP, Verdict.PASS]
    assert len(xdp.map("deny_src")) == 1


def test_per_cpu_values_one_per_cpu_with_a_sum(xdp, inject):
    inject(IP(dst=xdp.ip) / TCP(dport=1), count=40)
    per_cpu = xdp.map("per_cpu_packets")[0]
    assert len(per_cpu) == len(os.sched_getaffinity(0)) or len(per_cpu) >= os.cpu_count()
    assert per_cpu.sum() == 40
    with pytest.raises(ValueError, match="per-CPU map: give a list of"):
        xdp.map("per_cpu_packets")[0] = 5


def test_ring_buffer_events_read_back(xdp, inject):
    inject([IP(src="198.51.100.1", dst=xdp.ip) / UDP(dport=p) for p in (100, 200, 300)])

    class Event(ctypes.Structure):
        _fields_ = [("saddr", ctypes.c_uint8 * 4), ("dport", ctypes.c_uint16), ("len", ctypes.c_uint16)]

    events = xdp.events("events").read(Event)
    assert [e.dport for e in events] == [100, 200, 300]
    assert bytes(events[0].saddr) == bytes([198, 51, 100, 1])
    assert xdp.events("events").read() == []  # read once


def test_globals_read_written_and_fresh_per_test(xdp, inject):
    assert xdp.globals["udp_seen"] == 0 and xdp.globals["drop_len_over"] == 100000  # whatever the last test did
    inject(IP(dst=xdp.ip) / UDP(dport=7), count=5)
    assert xdp.globals["udp_seen"] == 5
    xdp.globals["drop_len_over"] = 50
    c = inject([IP(dst=xdp.ip) / UDP(dport=7), IP(dst=xdp.ip) / UDP(dport=7) / (b"x" * 20)])
    assert c.verdicts == [Verdict.PASS, Verdict.DROP]
    with pytest.raises(Exception, match="froze it at load"):
        xdp.globals["tail_port"] = 1


def test_state_is_fresh_after_the_previous_test(xdp, inject):
    # Runs after the tests above on the same loaded program: nothing of theirs is left.
    assert len(xdp.map("flows")) == 0 and len(xdp.map("deny_src")) == 0
    assert xdp.map("per_cpu_packets")[0].sum() == 0
    assert xdp.globals["udp_seen"] == 0 and xdp.events("events").read() == []


@pytest.mark.tail_port(4444)
def test_tail_call_into_a_second_program_of_the_object(xdp, inject):
    """The entry runs as a function our inspector calls; a tail call from a function returns the
    tail-called program's verdict to its caller, so the verdict is exact in both tiers."""
    xdp.map("jump")[0] = "drop_all"
    c = inject([IP(dst=xdp.ip) / UDP(dport=4444), IP(dst=xdp.ip) / UDP(dport=4445)] * 50)
    assert c.verdicts == [Verdict.DROP, Verdict.PASS] * 50
    assert xdp.globals["tail_port"] == 4444


def test_the_entry_is_not_a_program_array_value(xdp):
    with pytest.raises(Exception, match="the program under test: it runs inside pktassert's inspector"):
        xdp.map("jump")[0] = "features"

