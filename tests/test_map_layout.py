"""Map keys and values laid out from BTF exactly as the kernel lays them out: bitfields, a union, a
nested struct, an array, padding. The kernel is the oracle (libbpf/map_layout_rules.bpf.c writes
known values and checks what the test wrote); hand-made BTF covers the older bitfield encoding and
a layout that cannot be represented. Byte images are little-endian (x86-64, arm64)."""

import ctypes
import ctypes.util
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP

from pktassert import Verdict
from pktassert.kernel import btf_types
from pktassert.programs.state_map import MapValueError, _from, to_ctype

clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
LAYOUT = pytest.mark.xdp("libbpf/map_layout_rules.bpf.c", func="map_layout")
BOTH = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
UNIT = pytest.mark.parametrize("tier", ["unit"], indirect=True)

# layouts[1] as the test writes it; the program checks each field (bit i of `matched`).
WRITTEN = {"id": 7, "enabled": 1, "action": 3, "hits": 0xc0000201, "neg": -9, "wide": 0xabcde, "big": 0x123456789a,
           "addr": {"halves": {"a": 0x1122, "b": 0x3344}}, "ports": {"lo": 1000, "hi": 2000, "do_lo": 0, "do_hi": 1},
           "counts": [1, 2, 65535], "bytes": 0x0102030405060708, "tail": 0xee,
           "tcp": {"do_dport": 1, "dport": 8080, "syn": 1, "do_cwr": 1}}
ALL_CHECKS = (1 << 15) - 1


def frame(xdp):
    return IP(src="198.51.100.1", dst=xdp.ip) / UDP(dport=9)


@clang
@BOTH
@LAYOUT
def test_bitfield_value_the_program_wrote_reads_back(xdp, inject):
    inject(frame(xdp))
    assert ctypes.sizeof(xdp.map("rules").Leaf) == 4  # as the kernel: 2 bits, a byte, a u16
    rule = xdp.map("rules")[1]
    assert (rule.set, rule.log, rule.action, rule.block_time) == (1, 0, 5, 600)


@clang
@BOTH
@LAYOUT
def test_bitfield_value_written_from_python_is_what_the_program_reads(xdp, inject):
    rules = xdp.map("rules")
    rules[0] = {"set": 1, "action": 3, "block_time": 300}
    assert rules[0] == (1, 0, 3, 300)
    assert inject(frame(xdp)).verdicts == [Verdict.DROP]
    rules[0] = {"set": 0, "action": 3, "block_time": 300}
    assert inject(frame(xdp)).verdicts == [Verdict.PASS]
    rules[0] = (1, 1, 3, 300)  # log set: the program passes it
    assert inject(frame(xdp)).verdicts == [Verdict.PASS]
    rules[0] = struct.pack("<BBH", 0b01, 3, 300)  # the C image: set is bit 0 of byte 0
    assert rules[0] == (1, 0, 3, 300)
    assert inject(frame(xdp)).verdicts == [Verdict.DROP]


@clang
@BOTH
@LAYOUT
def test_union_nested_struct_array_and_padding_the_program_wrote(xdp, inject):
    inject(frame(xdp))
    assert ctypes.sizeof(xdp.map("layouts").Leaf) == 72
    v = xdp.map("layouts")[0]
    assert (v.id, v.enabled, v.action, v.hits) == (9, 1, 4, 0xc6336401)
    assert (v.neg, v.wide, v.big) == (-16, 0xfffff, 0xfedcba9876)
    assert v.addr.v4 == 0xa1b2c3d4 and v.addr.bytes == bytes.fromhex("d4c3b2a1")
    assert v.addr.halves == (0xc3d4, 0xa1b2)
    assert v.ports == (53, 65535, 1, 0) and (v.ports.do_lo, v.ports.do_hi) == (1, 0)
    assert v.counts == [10, 20, 30]
    assert v.tcp == (1, 1, 22, 0, 443, 1, 0, 1, 1)  # XDP-Firewall's tcp_opts: bitfields between u16s
    assert (v.bytes, v.tail) == (0x1122334455667788, 0x7f)


@clang
@BOTH
@LAYOUT
def test_every_field_written_from_python_is_what_the_program_reads(xdp, inject):
    xdp.map("layouts")[1] = WRITTEN
    xdp.map("by_key")[{"proto": 6, "port": 443, "v6": 0}] = 1  # a bitfield key the program looks up
    inject(frame(xdp))
    matched = xdp.globals["matched"]
    assert matched == ALL_CHECKS, f"fields the program read wrong (bits of check()): {ALL_CHECKS & ~matched:#b}"
    back = xdp.map("layouts")[1]
    assert (back.neg, back.big, back.ports.do_hi, back.addr.halves.b, back.tail) == (-9, 0x123456789a, 1, 0x3344, 0xee)


@clang
@BOTH
@LAYOUT
def test_a_bitfield_key_the_program_wrote_reads_back(xdp, inject):
    inject(frame(xdp))
    assert ctypes.sizeof(xdp.map("by_key").Key) == 4
    assert dict(xdp.map("by_key").items()) == {(17, 5353, 1): 7}
    assert {"proto": 17, "port": 5353, "v6": 1} in xdp.map("by_key")


@clang
@UNIT
@LAYOUT
def test_values_that_do_not_fit_a_bitfield_are_refused(xdp):
    rules, layouts = xdp.map("rules"), xdp.map("layouts")
    with pytest.raises(MapValueError, match=r"rules value\.set: 2 does not fit .*1-bit.*0\.\.1"):
        rules[0] = {"set": 2}
    with pytest.raises(MapValueError, match=r"layouts value\.neg: 16 does not fit .*-16\.\.15"):
        layouts[0] = {"neg": 16}
    with pytest.raises(MapValueError, match=r"rules value\.action: -1 does not fit"):
        rules[0] = {"action": -1}
    with pytest.raises(MapValueError, match="struct rule has no field sett; its fields: set, log, action, block_time"):
        rules[0] = {"sett": 1}
    assert rules[0] == (0, 0, 0, 0)  # nothing was written


@clang
@LAYOUT
@pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)
def test_devmap_with_int_key_and_value_takes_plain_ints(xdp):
    ifindex = xdp.ifindex if xdp.tier == "live" else 1  # the unit tier's map writes resolve in a namespace with lo
    xdp.map("tx_port")[0] = ifindex
    assert xdp.map("tx_port")[0] == ifindex
    assert 0 in xdp.map("tx_port") and ctypes.sizeof(xdp.map("tx_port").Key) == 4


@clang
def test_map_types_are_the_declared_ones_even_where_libbpf_drops_them(tmp_path):
    """libbpf zeroes a devmap's BTF key and value ids at load (the kernel takes no BTF for it);
    .maps still declares them."""
    from pktassert.build import libbpf_build
    from pktassert.kernel import libbpf

    out = tmp_path / "m.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", *libbpf_build.include_dirs(),
                    "-c", str(Path(__file__).parent / "libbpf" / "map_layout_rules.bpf.c"), "-o", str(out)], check=True)
    lib = libbpf.lib()
    obj = lib.bpf_object__open_file(str(out).encode(), None)
    try:
        btf = btf_types.Btf(lib.bpf_object__btf(obj))
        key, value = btf.map_types("tx_port")
        assert btf.ctype(key) is ctypes.c_int32 and btf.ctype(value) is ctypes.c_int32
        assert btf.ctype(btf.map_types("rules")[1]).__name__ == "rule"
        assert btf.map_types("no_such_map") == (0, 0)
    finally:
        lib.bpf_object__close(obj)


# Hand-made BTF (no kernel needed): kind_flag clear, where an INT type carries a bitfield's bits and offset.
_lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1")  # our own handle: its signatures stay ours
_lib.btf__new.argtypes, _lib.btf__new.restype = [ctypes.c_char_p, ctypes.c_uint32], ctypes.c_void_p
_lib.btf__free.argtypes, _lib.btf__free.restype = [ctypes.c_void_p], None


class _BtfBlob:
    """Types appended one by one (ids from 1), names into the string section."""

    def __init__(self) -> None:
        self.types, self.strings = b"", b"\0"

    def _name(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def int_(self, name: str, size: int, bits: int, offset: int = 0, signed: bool = False) -> None:
        self.types += struct.pack("<IIII", self._name(name), 1 << 24, size, (signed << 24) | (offset << 16) | bits)

    def record(self, name: str, size: int, members: list[tuple[str, int, int]], kflag: int = 0, union: bool = False):
        info = (kflag << 31) | ((5 if union else 4) << 24) | len(members)
        self.types += struct.pack("<III", self._name(name), info, size)
        for mname, mtype, off in members:
            self.types += struct.pack("<III", self._name(mname), mtype, off)

    def load(self) -> btf_types.Btf:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        data = hdr + self.types + self.strings
        ptr = _lib.btf__new(data, len(data))
        assert ptr, "libbpf refused the hand-made BTF"
        return btf_types.Btf(ptr)


def test_bitfields_encoded_in_int_types_with_kind_flag_clear():
    b = _BtfBlob()
    b.int_("unsigned char", 1, 8)                     # 1
    b.int_("unsigned short", 2, 16)                   # 2
    b.int_("", 4, 1)                                  # 3: 1 bit at the member's offset
    b.int_("", 4, 1, offset=1)                        # 4: 1 bit, 1 further than the member's offset
    b.int_("", 4, 3, signed=True)                     # 5: a signed 3-bit field
    b.record("rule", 4, [("set", 3, 0), ("log", 4, 0), ("action", 1, 8), ("block_time", 2, 16)])
    b.record("odd", 2, [("lo", 5, 0), ("hi", 5, 6)])   # 7: hi spans bits 6..8, across a byte boundary
    btf = b.load()
    rule = btf.ctype(6)
    assert ctypes.sizeof(rule) == 4
    assert bytes(to_ctype(rule, {"set": 1, "action": 3, "block_time": 300}, "rules value")) == b"\x01\x03\x2c\x01"
    assert bytes(to_ctype(rule, {"log": 1}, "rules value")) == b"\x02\0\0\0"
    assert _from(rule.from_buffer_copy(b"\x03\x05\x58\x02")) == (1, 1, 5, 600)
    odd = btf.ctype(7)
    assert ctypes.sizeof(odd) == 2
    assert bytes(to_ctype(odd, {"lo": -1, "hi": -4}, "v")) == bytes([0x07, 0x01])
    assert _from(odd.from_buffer_copy(bytes([0xC3, 0x00]))) == (3, 3)
    _lib.btf__free(btf.ptr)


def test_a_layout_that_cannot_be_represented_is_refused_clearly():
    b = _BtfBlob()
    b.int_("unsigned int", 4, 32)                     # 1
    b.record("bad", 4, [("a", 1, 0), ("b", 1, 8)])    # 2: b overlaps a (no C compiler makes this)
    btf = b.load()
    bad = btf.ctype(2)
    assert ctypes.sizeof(bad) == 4
    with pytest.raises(MapValueError, match=r"rules value: struct bad cannot be laid out .*overlaps.*Fix: .*4 bytes"):
        to_ctype(bad, {"a": 1}, "rules value")
    assert _from(to_ctype(bad, b"\1\2\3\4", "rules value")) == b"\1\2\3\4"  # raw bytes are exact: taken
    _lib.btf__free(btf.ptr)
