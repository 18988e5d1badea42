"""The code is ruff and mypy clean and keeps its layers (import-linter), as pyproject.toml defines them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["mypy", "pktassert"], ["lint-imports", "--no-cache"]],
                         ids=["ruff", "mypy", "layers"])
def test_clean(command, tmp_path):
    tool = BIN / command[0] if (BIN / command[0]).exists() else shutil.which(command[0])
    assert tool, f"{command[0]} is not installed: pip install -e '.[test]'"
    if command[0] == "mypy" and not os.access(ROOT / ".mypy_cache" if (ROOT / ".mypy_cache").exists() else ROOT, os.W_OK):
        command = [*command, "--cache-dir", str(tmp_path / "mypy")]  # another user's checkout (tests run unprivileged)
    done = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


@pytest.mark.parametrize("module, planted", [
    ("kernel/libbpf.py", "import pktassert.device.dut"),          # a kernel face reaching up to the device
    ("frames/wire.py", "from pktassert.results import capture"),  # frames are bytes only
    ("netns/owner.py", "import pktassert.errors"),                # namespaces know nothing of pktassert
], ids=["upward", "frames-up", "netns"])
def test_a_planted_upward_import_breaks_the_contracts(tmp_path, module, planted):
    """The contracts can fail: a copy of the package with one import against the layers is refused."""
    tool = BIN / "lint-imports" if (BIN / "lint-imports").exists() else shutil.which("lint-imports")
    assert tool, "lint-imports is not installed: pip install -e '.[test]'"
    copy = tmp_path / "pktassert"
    shutil.copytree(ROOT / "pktassert", copy, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(copy / module, "a") as f:
        f.write(f"\n{planted}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(tool), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "BROKEN" in done.stdout, done.stdout[-2000:]
    assert planted.split()[-1].split(".")[-1] in done.stdout or planted.split()[1] in done.stdout, done.stdout[-2000:]
