"""What compare() runs: each side a filter at a hook, or a rule set; given as a Subject, a path, or
``git:REV:path`` (that file as it is in revision REV of the repository holding it)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pktassert.errors import ProgramError
from pktassert.hooks.table import HOOKS
from pktassert.programs.subjects import SUBJECTS, Subject, subject_of

RULESET_SUFFIXES = (".nft", ".nftables")


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a comparison: a BPF filter at ``hook`` ("xdp", "tc"), or an nftables rule set."""

    label: str                   # as the user named it: "git:HEAD~1:filters/blocklist.bpf.c"
    filter: Subject | None = None
    hook: str = "xdp"
    rules: str | None = None     # the rule set's text

    @property
    def kind(self) -> str:
        """What the packets meet: "xdp", "tc" or "nftables"."""
        return "nftables" if self.rules is not None else self.hook

    def dut_args(self) -> dict[str, Any]:
        """What Session.dut() takes to run this side."""
        return {"nftables": self.rules} if self.rules is not None else {self.hook: self.filter}


def _git_show(spec: str) -> tuple[bytes, Path]:
    """The bytes of ``git:REV:path``, and where the file lives in the working tree (its includes)."""
    _, rev, path = spec.split(":", 2)
    if not rev or not path:
        raise ProgramError(f"{spec!r}: a file at a revision is written git:REV:PATH, e.g. git:HEAD~1:filters/f.bpf.c.")
    where = Path(path).resolve()
    folder = where.parent if where.parent.is_dir() else Path.cwd()
    # git itself reads the object: no Python library in our dependencies reads a repository.
    # "REV:./name" is the path relative to the folder git runs in, wherever that is in the repository.
    name = f"{rev}:./{where.name}" if where.parent.is_dir() else f"{rev}:{path}"
    done = subprocess.run(["git", "-C", str(folder), "show", name], capture_output=True)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise ProgramError(f"{spec!r}: git cannot give that file at that revision ({said[-1] if said else 'no output'}). "
                           f"Fix: a revision of the repository that holds {path} (git log -- {path}), and the path as "
                           f"it is in that revision.")
    return done.stdout, where


@contextlib.contextmanager
def resolved(value: Any, func: str | None, hook: str, cflags: tuple[str, ...]) -> Iterator[Side]:
    """``value`` as a Side, for as long as the comparison runs (a file from git lives in a temporary folder)."""
    if hook not in HOOKS:
        raise ProgramError(f"hook={hook!r}: a BPF side hooks at one of {', '.join(HOOKS)}.")
    if isinstance(value, Side):
        yield value
        return
    if isinstance(value, SUBJECTS):
        yield Side(getattr(value, "name", None) or repr(value), filter=value, hook=hook)
        return
    if not isinstance(value, (str, os.PathLike)):
        raise ProgramError(f"compare(): {value!r} is not something pktassert can test. Fix: a path (.c, .bpf.c, .o, "
                           f".nft), git:REV:PATH, a BccSource/LibbpfSource/ObjectFile, or pktassert.compare.Side.")
    text = os.fspath(value)
    with tempfile.TemporaryDirectory(prefix="pktassert-compare-") as tmp:
        if text.startswith("git:"):
            data, where = _git_show(text)
            path = Path(tmp) / where.name
            path.write_bytes(data)
            includes = ("-I", str(where.parent)) if where.parent.is_dir() else ()
        else:
            path, includes = Path(text), ()
            if not path.exists():
                raise ProgramError(f"compare(): {text} does not exist. Fix: the path of a filter (.c, .bpf.c, .o) or a "
                                   f"rule set (.nft), or git:REV:PATH for a file at a revision.")
        if path.name.endswith(RULESET_SUFFIXES):
            yield Side(text, rules=path.read_text())
            return
        if func is None:
            raise ProgramError(f"compare(): {text} is a BPF filter; say which function is its entry. Fix: "
                               f"compare(..., func=\"xdp_prog\").")
        yield Side(text, filter=subject_of(path, func, cflags=(*cflags, *includes), hook=hook), hook=hook)
