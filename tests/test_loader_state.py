"""Fresh state is the state the object's own loader leaves, not empty maps: what libbpf puts into maps
while it loads an object (program arrays and maps of maps declared with `.values`, global variables
in .rodata/.data/.bss and custom .data.* sections, `globals=` set before load) is what every test
starts with, in both tiers; what a test changed (a tail-call target given at run time, a global it
wrote, an inner map it removed) is gone in the next.

The oracle is the same object loaded alone by libbpf (bpf_object__open_file + bpf_object__load) and
run with BPF_PROG_TEST_RUN on the same frames."""

import contextlib
import ctypes
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktassert import LibbpfSource, ObjectFile, Verdict
from pktassert.build import libbpf_build
from pktassert.kernel import btf_types, libbpf
from pktassert.kernel.test_run import TestRunner

HERE = Path(__file__).parent / "libbpf"
TAIL = HERE / "loader_state_tail.bpf.c"         # dispatch(): jmp = { .values = { [0] = &tail_drop } }
MAPS = HERE / "loader_state_maps.bpf.c"         # policy(), policy_hash(): outer/outer_h = { .values = ... }
GLOBALS = HERE / "loader_state_globals.bpf.c"   # by_globals(): ports in .rodata, .data, .bss, .data.custom
SET_BEFORE_LOAD = (("rodata_port", 5), ("data_port", 6), ("bss_port", 7))
PORTS = (9, 1, 2, 4, 5, 6, 7, 8)  # UDP destination ports of the frames each filter is given

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed: apt-get install clang")
pytestmark = [needs_clang]
tiers = pytest.mark.parametrize("tier", ["live", "unit"], indirect=True)


def build(source: Path, out_dir: Path) -> Path:
    """The object the filter's Makefile builds."""
    out = out_dir / source.name.replace(".c", ".o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", *libbpf_build.include_dirs(),
                    "-c", str(source), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    out = tmp_path_factory.mktemp("loader_state")
    return {src: build(src, out) for src in (TAIL, MAPS, GLOBALS)}


@contextlib.contextmanager
def loaded_alone(obj: Path, globals_: tuple[tuple[str, Any], ...] = ()) -> Iterator[int]:
    """The object loaded by libbpf alone, as its own loader would (globals written before load)."""
    lib = libbpf.lib()
    with libbpf.messages() as said:
        handle = lib.bpf_object__open_file(str(obj).encode(), None)
    assert handle, said
    try:
        btf = btf_types.Btf(lib.bpf_object__btf(handle))
        for name, value in globals_:
            section, var = next((s, v) for s in (".rodata", ".data", ".bss") for v in btf.datasec(s) if v.name == name)
            size = ctypes.c_size_t()
            image = lib.bpf_map__initial_value(lib.bpf_object__find_map_by_name(handle, section.encode()),
                                               ctypes.byref(size))
            fitted = var.ctype(value)
            ctypes.memmove(image + var.offset, ctypes.addressof(fitted), var.size)
        with libbpf.messages() as said:
            assert lib.bpf_object__load(handle) == 0, said
        yield handle
    finally:
        lib.bpf_object__close(handle)


def frame(port: int) -> Any:
    return IP(src="198.51.100.7", dst="192.0.2.1") / UDP(sport=4000, dport=port)


def alone_verdicts(obj: Path, func: str, globals_: tuple[tuple[str, Any], ...] = ()) -> list[Verdict]:
    """The verdict per port of ``func`` in the object loaded alone, run with BPF_PROG_TEST_RUN."""
    lib = libbpf.lib()
    with loaded_alone(obj, globals_) as handle:
        runner = TestRunner(lib.bpf_program__fd(lib.bpf_object__find_program_by_name(handle, func.encode())))
        return [Verdict(runner.run(bytes(Ether() / frame(p))).retval) for p in PORTS]


def alone_globals(obj: Path, globals_: tuple[tuple[str, Any], ...]) -> dict[str, int]:
    """Every global variable of the object's own, as libbpf left it after loading it alone."""
    lib, out = libbpf.lib(), {}
    with loaded_alone(obj, globals_) as handle:
        btf = btf_types.Btf(lib.bpf_object__btf(handle))
        for section in (".rodata", ".data", ".bss", ".data.custom"):
            size = ctypes.c_size_t()
            image = lib.bpf_map__initial_value(lib.bpf_object__find_map_by_name(handle, section.encode()),
                                               ctypes.byref(size))  # after load: the map's own memory
            for var in btf.datasec(section):
                out[var.name] = var.ctype.from_address(image + var.offset).value
    return out


def verdicts(xdp: Any, inject: Any) -> list[Verdict]:
    return inject([IP(src="198.51.100.7", dst=xdp.ip) / UDP(sport=4000, dport=p) for p in PORTS]).verdicts


def subject(kind: str, objects: dict[Path, Path], source: Path, func: str, **kw: Any) -> Any:
    return LibbpfSource(source, func, **kw) if kind == "source" else ObjectFile(objects[source], func, **kw)


# -- program arrays declared with .values -------------------------------------------------------------


@pytest.fixture(params=["source", "object"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def xdp_program(request: pytest.FixtureRequest, kind: str, objects: dict[Path, Path]) -> Any:
    """The filter as a libbpf source or as the object its Makefile builds: (source, func, globals)."""
    source, func, given = request.param
    return subject(kind, objects, source, func, globals=given)


@tiers
@pytest.mark.parametrize("n", [1, 2])  # two tests in a row on one loaded program: the second after a reset
@pytest.mark.parametrize("xdp_program", [(TAIL, "dispatch", ())], indirect=True, ids=["dispatch"])
def test_declared_tail_call_target_is_in_place(xdp, inject, objects, n):
    alone = alone_verdicts(objects[TAIL], "dispatch")
    assert alone[:2] == [Verdict.DROP, Verdict.PASS]  # slot 0 declared (tail_drop), slot 1 empty
    assert verdicts(xdp, inject) == alone
    # What this test does to the program array must not reach the next.
    xdp.map("jmp")[0] = "tail_pass"
    xdp.map("jmp")[1] = "tail_drop"
    assert verdicts(xdp, inject)[:2] == [Verdict.PASS, Verdict.DROP]


# -- maps of maps declared with .values ---------------------------------------------------------------


@tiers
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("xdp_program, func, outer, key, inner",
                         [((MAPS, "policy", ()), "policy", "outer", 0, "inner1"),
                          ((MAPS, "policy_hash", ()), "policy_hash", "outer_h", 7, "inner2")],
                         indirect=["xdp_program"], ids=["array_of_maps", "hash_of_maps"])
def test_declared_inner_map_is_in_place(xdp, inject, objects, n, func, outer, key, inner):
    alone = alone_verdicts(objects[MAPS], func)
    assert set(alone) == {Verdict.DROP}  # the declared policy map is installed and allows nothing
    assert verdicts(xdp, inject) == alone
    assert xdp.map(inner)[0] == 0
    xdp.map(inner)[0] = 1
    assert set(verdicts(xdp, inject)) == {Verdict.PASS}
    del xdp.map(outer)[key]
    xdp.map(inner)[0] = 0
    assert set(verdicts(xdp, inject)) == {Verdict.PASS}  # no policy map installed


# -- global variables -------------------------------------------------------------------------------


@tiers
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("xdp_program, given", [((GLOBALS, "by_globals", ()), ()),
                                                 ((GLOBALS, "by_globals", SET_BEFORE_LOAD), SET_BEFORE_LOAD)],
                         indirect=["xdp_program"], ids=["as-declared", "globals-set-before-load"])
def test_globals_start_as_the_loader_left_them(xdp, inject, objects, n, given):
    expected = alone_globals(objects[GLOBALS], given)
    assert expected["custom_seen"] == 10 and expected["data_port"] == (6 if given else 2)
    assert {name: xdp.globals[name] for name in expected} == expected
    alone = alone_verdicts(objects[GLOBALS], "by_globals", given)
    assert verdicts(xdp, inject) == alone
    assert xdp.globals["seen"] == len(PORTS) and xdp.globals["custom_seen"] == 10 + len(PORTS)
    # What this test writes must not reach the next.
    for name in ("data_port", "bss_port", "custom_port"):
        xdp.globals[name] = 9
    assert verdicts(xdp, inject)[0] == Verdict.DROP


# -- one test after another, in this order, on one loaded program -------------------------------------

SEQUENCE = """
import pytest
from scapy.layers.inet import IP, UDP
from pktassert import Verdict

PORTS = {ports!r}
TAIL, MAPS, GLOBALS = {tail!r}, {maps!r}, {globals_!r}
EXPECTED = {expected!r}

def verdicts(xdp, inject):
    return [v.name for v in inject([IP(dst=xdp.ip) / UDP(sport=4000, dport=p) for p in PORTS]).verdicts]

@pytest.mark.xdp(TAIL, func="dispatch")
def test_1_user_rewires_the_program_array(xdp, inject):
    assert verdicts(xdp, inject) == EXPECTED["dispatch"]
    xdp.map("jmp")[0] = "tail_pass"
    xdp.map("jmp")[1] = "tail_drop"
    assert verdicts(xdp, inject)[:2] == ["PASS", "DROP"]

@pytest.mark.xdp(TAIL, func="dispatch")
def test_2_declared_slot_back_and_the_users_gone(xdp, inject):
    assert verdicts(xdp, inject) == EXPECTED["dispatch"]

@pytest.mark.xdp(MAPS, func="policy")
def test_3_user_removes_the_inner_map(xdp, inject):
    assert verdicts(xdp, inject) == EXPECTED["policy"]
    del xdp.map("outer")[0]
    assert set(verdicts(xdp, inject)) == {{"PASS"}}

@pytest.mark.xdp(MAPS, func="policy")
def test_4_declared_inner_map_back(xdp, inject):
    assert verdicts(xdp, inject) == EXPECTED["policy"]

@pytest.mark.xdp(GLOBALS, func="by_globals", globals={given!r})
def test_5_user_writes_globals(xdp, inject):
    assert verdicts(xdp, inject) == EXPECTED["by_globals"]
    for name in ("data_port", "bss_port", "custom_port"):
        xdp.globals[name] = 9
    assert verdicts(xdp, inject)[0] == "DROP"

@pytest.mark.xdp(GLOBALS, func="by_globals", globals={given!r})
def test_6_globals_back(xdp, inject):
    assert xdp.globals["seen"] == 0 and xdp.globals["custom_seen"] == 10
    assert verdicts(xdp, inject) == EXPECTED["by_globals"]
"""


@pytest.mark.parametrize("tier_name", ["live", "unit"])
def test_what_a_test_changed_is_gone_in_the_next(pytester, pktassert_ready, kind, objects, tier_name):
    given = dict(SET_BEFORE_LOAD)
    expected = {"dispatch": [v.name for v in alone_verdicts(objects[TAIL], "dispatch")],
                "policy": [v.name for v in alone_verdicts(objects[MAPS], "policy")],
                "by_globals": [v.name for v in alone_verdicts(objects[GLOBALS], "by_globals", SET_BEFORE_LOAD)]}
    paths = {src: str(src if kind == "source" else objects[src]) for src in (TAIL, MAPS, GLOBALS)}
    pytester.makepyfile(test_sequence=SEQUENCE.format(ports=PORTS, tail=paths[TAIL], maps=paths[MAPS],
                                                      globals_=paths[GLOBALS], expected=expected, given=given))
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", f"--pktassert-tier={tier_name}")
    res.assert_outcomes(passed=6)
