"""Files the plugin's own tests share: the example suite copied into a pytester folder, and the
fields tshark reads from a pcapng."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def copy_examples(to: Path, leave_out: str | tuple[str, ...] = ()) -> None:
    """The example filters, rule sets and tests, their captures, earlier releases (versions/) and the
    objects `make -C examples` built; but the tests whose file names start with ``leave_out``."""
    for f in EXAMPLES.iterdir():
        if f.suffix in (".c", ".py", ".nft") and not (leave_out and f.name.startswith(leave_out)):
            shutil.copy(f, to / f.name)
    for folder in ("captures", "versions", "build"):
        shutil.copytree(EXAMPLES / folder, to / folder)


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    """Each frame of the pcapng at ``path`` as the values of ``fields``, read back by tshark."""
    tshark = shutil.which("tshark")
    assert tshark, "tshark is not installed: apt install tshark"
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=/t",
                          *[a for f in fields for a in ("-e", f)]], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]  # (comments may hold "|")
