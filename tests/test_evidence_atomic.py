"""Evidence is never left half-written under its name (issue 20, item 9): a run killed while writing
a test's pcapng leaves no file under the final name (only a ``.<name>.<random>.part`` for cleanup to
sweep), and a run that is not killed leaves a file tshark reads without a warning."""

import os
import re
import select
import signal
import subprocess
import sys

import pytest
from suite_files import tshark_fields

from pktassert.reports import evidence

SUITE = '''
import pytest
from scapy.layers.inet import IP, UDP

DROP = "int drop_all(struct xdp_md *ctx) { return XDP_DROP; }"

@pytest.mark.xdp(DROP, func="drop_all")
def test_two_hundred(xdp, inject):
    inject(IP(dst=xdp.ip) / UDP(dport=53), count=200)
    assert False, "failed: so its 200 packets are written as evidence"
'''

# The test's checkpoint, in the child run only (not in pktassert): after the writer's 50th packet,
# flush what it holds (as a writer does every 4 KiB), say so, and wait there to be killed.
CHECKPOINT = '''
import os
from pktassert.reports import evidence

_packet, _written = evidence._Writer.packet, []

def packet(self, *args, **kwargs):
    _packet(self, *args, **kwargs)
    _written.append(1)
    if len(_written) == 50 and "CHECKPOINT_FD" in os.environ:
        self.f.flush()
        from pktassert.machine import reaper
        os.write(int(os.environ["CHECKPOINT_FD"]), f"50 written {reaper.pid()}\\n".encode())
        os.read(int(os.environ["HOLD_FD"]), 1)  # never answered: killed here

evidence._Writer.packet = packet
'''
NAME = "test_suite.py_test_two_hundred.pcapng"
PART = re.compile(r"\." + re.escape(NAME) + r"\.[0-9a-f]{12}\.part")
TSHARK_ROOT_NOTE = 'Running as user "root" and group "root". This could be dangerous.'


def _env() -> dict[str, str]:
    """This environment, less what would make the child a worker of this run (xdist) or share its folder."""
    return {k: v for k, v in os.environ.items() if k != "PKTASSERT_RUN" and not k.startswith("PYTEST_")}


def test_a_writer_killed_mid_write_leaves_no_file_under_the_final_name(pytester, pktassert_ready, tmp_path):
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(CHECKPOINT)
    said, said_w = os.pipe()
    hold_r, hold = os.pipe()
    env = dict(_env(), CHECKPOINT_FD=str(said_w), HOLD_FD=str(hold_r))
    with open(tmp_path / "child.out", "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                                  "-p", "no:xdist", "test_suite.py"], cwd=pytester.path, env=env,
                                 pass_fds=(said_w, hold_r), stdout=out, stderr=subprocess.STDOUT)
    os.close(said_w)
    os.close(hold_r)
    try:
        # Awaited, not slept on: the child says when its writer is at packet 50 (or closes the pipe).
        assert select.select([said], [], [], 300)[0], "the child never reached its writer's 50th packet"
        word, reaper = os.read(said, 64).decode().rsplit(" ", 1)
        assert word == "50 written", (tmp_path / "child.out").read_text()[-3000:]
        folder = pytester.path / "pktassert-evidence"
        parts = list(folder.glob("run-*/.*"))
        assert len(parts) == 1 and PART.fullmatch(parts[0].name), parts  # the temporary it writes
        assert parts[0].stat().st_size > 50 * 54  # 50 packets in it when killed
        watch = os.pidfd_open(int(reaper))
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the run we started, mid-write
        child.wait()
        os.close(said)
        os.close(hold)
    assert select.select([watch], [], [], 30)[0], "the child's reaper did not finish"  # it exits when done
    os.close(watch)
    assert sorted(p.name for p in folder.glob("run-*/*.pcapng")) == []  # nothing under the final name
    assert list(folder.glob("run-*/.*")) == []  # and its reaper removed the temporary

    # The same run, not killed: the file appears whole under its name, and tshark reads it without a word.
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-p", "no:xdist", "test_suite.py"], cwd=pytester.path, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert "1 failed" in done.stdout, done.stdout[-3000:]
    files = list(folder.glob(f"run-*/{NAME}"))
    assert len(files) == 1, files
    read = subprocess.run(["tshark", "-r", str(files[0])], capture_output=True, text=True)
    assert read.returncode == 0 and read.stderr.replace(TSHARK_ROOT_NOTE, "").strip() == "", read.stderr
    assert len(read.stdout.splitlines()) == 200
    assert len(tshark_fields(files[0], "frame.verdict.ebpf_xdp")) == 200
    assert [p for p in folder.glob("run-*/.*") if p.parent == files[0].parent] == []  # its temporary renamed


class _Broken:
    """Mocked: a capture that fails while its packets are written (any error, or Ctrl-C)."""

    def __len__(self) -> int:
        raise KeyboardInterrupt


def test_a_write_that_fails_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "evidence" / "t.pcapng"
    path.parent.mkdir()
    path.write_bytes(b"the previous run's file")
    with pytest.raises(KeyboardInterrupt):
        evidence.write(path, [_Broken()], "t")  # type: ignore[list-item]
    assert [p.name for p in path.parent.iterdir()] == ["t.pcapng"] and path.read_bytes() == b"the previous run's file"


def test_writers_of_the_same_file_never_share_a_temporary(tmp_path):
    path = tmp_path / "t.pcapng"
    names = {evidence._reserve(path).name for _ in range(200)}  # each created exclusively (O_EXCL)
    assert len(names) == 200
    assert all(re.fullmatch(r"\.t\.pcapng\.[0-9a-f]{12}\.part", n) for n in names)
