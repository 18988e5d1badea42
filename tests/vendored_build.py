"""The vendored third-party BPF programs built as their projects' Makefiles build them (clang), for
tests/test_third_party.py and tests/test_third_party_tc.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest


def needs_clang() -> str:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (shutil.which('clang') is None): the vendored libbpf programs are "
                    "compiled with clang, and pktassert links its inspector with it. Fix: apt-get install clang.")
    return clang


def build_all(programs: Mapping[str, Any], out: Path,
              command: Callable[[str, Any, Path], list[str]]) -> dict[str, Path]:
    """Each program built to ``out/<name>.o`` by ``command(clang, program, object)``."""
    clang = needs_clang()
    built = {}
    for name, prog in programs.items():
        obj = out / f"{name}.o"
        argv = command(clang, prog, obj)
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stderr}"
        built[name] = obj
    return built
