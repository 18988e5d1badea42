"""What is tested: a bcc source, a libbpf source or an ELF object, told apart once, here.

``subject_of`` reads what the marker gave: an ELF file is an object; C that uses libbpf's
conventions (SEC(...), <bpf/bpf_helpers.h>, vmlinux.h) is a libbpf source; other C is bcc's.
Give the classes themselves to say it explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeAlias

from pktassert.build import build_cache
from pktassert.build.source_check import check_source, code_only, decode
from pktassert.errors import ProgramError
from pktassert.programs.bcc_program import Program as BccSource
from pktassert.programs.bcc_program import looks_like_path
from pktassert.programs.libbpf_program import LibbpfSource, ObjectFile

Subject: TypeAlias = BccSource | LibbpfSource | ObjectFile
SUBJECTS = (BccSource, LibbpfSource, ObjectFile)
_LIBBPF = re.compile(r"\bSEC\s*\(|#\s*include\s*[<\"](?:bpf/bpf_helpers\.h|vmlinux\.h)[>\"]")


def subject_of(source: str | os.PathLike[str], func: str, cflags: Any = (), globals: Any = None,
               hook: str = "xdp", max_entries: Any = None) -> Subject:
    check_source(source)
    pairs = _named_values(globals)
    sizes = _named_values(max_entries, "max_entries", "{\"iface_state\": 1024}")
    is_path = isinstance(source, os.PathLike) or looks_like_path(str(source))
    if is_path and (str(source).endswith(".o") or _starts_elf(Path(source))):
        return ObjectFile(source, func, pairs, tuple(cflags) if isinstance(cflags, (list, tuple)) else cflags, hook, sizes)
    if is_path:
        try:
            text = decode(Path(source).read_bytes(), str(source))
        except OSError:
            return BccSource(source, func, cflags, hook)  # says what is wrong with the path
    else:
        text = str(source)
    if _LIBBPF.search(code_only(text)):
        path = Path(source) if is_path else _inline_file(text)
        return LibbpfSource(path, func, cflags, pairs, hook, sizes)
    if sizes:
        raise ProgramError("max_entries= sizes a libbpf object's maps before load; a bcc source sizes its maps in "
                           "its BPF_HASH(...) declarations. Fix: drop max_entries=, or use cflags=(\"-DSIZE=N\",).")
    if pairs:
        raise ProgramError(f"globals= for {source if is_path else '<source text>'}, a bcc source: bcc sources keep "
                           f"their state in maps, not global variables. Fix: drop globals=, or use cflags=(\"-DX=1\",).")
    return BccSource(source, func, cflags, hook)


def _starts_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _inline_file(text: str) -> Path:
    """libbpf source given as text: clang compiles files, so it gets one, named by its content."""
    return build_cache.source_file(text)


def _named_values(value: Any, what: str = "globals", example: str = "{\"blocked_port\": 23}") -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ProgramError(f"{what}={value!r}: give a dict of names to values, e.g. {what}={example}.")
    return tuple(sorted(value.items()))
