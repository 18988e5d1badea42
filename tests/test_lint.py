"""The code is ruff and mypy clean, as the project's settings (pyproject.toml) define them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["mypy", "pktassert", "bpf", "netns"]], ids=["ruff", "mypy"])
def test_clean(command, tmp_path):
    tool = BIN / command[0] if (BIN / command[0]).exists() else shutil.which(command[0])
    assert tool, f"{command[0]} is not installed: pip install -e '.[test]'"
    if command[0] == "mypy" and not os.access(ROOT / ".mypy_cache" if (ROOT / ".mypy_cache").exists() else ROOT, os.W_OK):
        command = [*command, "--cache-dir", str(tmp_path / "mypy")]  # another user's checkout (tests run unprivileged)
    done = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
