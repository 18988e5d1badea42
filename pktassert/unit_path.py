"""The unit tier: each frame run through the loaded program by BPF_PROG_TEST_RUN, no traffic.

The program is the very one the live tier attaches (inspector included), so verdicts and parsed
fields come from the same code. Records go to the inspector's mmap-able slot array instead of
the ring buffer and are read in one copy after the runs.
"""

from __future__ import annotations

import errno
import os

import numpy as np

from pktassert.bpf.loaded import Loaded
from pktassert.errors import AccountingError, InjectError
from pktassert.outputs import TRAILER, Outputs
from pktassert.path import Part
from pktassert.record import const, dtype_of
from pktassert.wire import Wire

GROWTH = 256  # room kept for a filter that makes a frame longer (encapsulation, adjust_tail)


class UnitPath:
    tier = "unit"
    magic = const("MAGIC_UNIT")  # records to the slots
    chunk = min(65536, const("SLOTS"))  # a batch may not wrap the slot array onto itself

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.dtype = dtype_of(loaded.record_type)

    def send(self, wire: Wire, start: int, total: int, records: np.ndarray | None = None,
             stride: int | None = None, ctx: bytes | None = None) -> Part:
        """Run every frame of ``wire`` (send positions ``start``...), records into ``records``;
        ``stride`` is the room kept for each output frame (default: the longest input plus GROWTH)."""
        if stride is None:
            stride = -(-(int(wire.lengths.max()) - TRAILER + GROWTH) // 64) * 64
        runner = self.loaded.runner
        batch = runner.run_batch(wire.data, wire.offsets, wire.lengths, stride, ctx)
        failed = np.flatnonzero((batch.error != 0) & (batch.error != errno.ENOSPC))
        if len(failed):
            self._refused(wire, batch.error, int(failed[0]), start)
        records = self.loaded.read_slots(int(wire.tags[0]), np.empty(len(wire), self.dtype) if records is None else records)
        own = records["tag"] == wire.tags
        # A tail call left the inspector before it could finish the record: the test run's return
        # value is the tail-called program's verdict, exactly.
        tail = own & (records["verdict"] == const("PENDING"))
        if tail.any():
            ret = batch.retval[tail].astype(np.uint32).view(np.int32)
            records["ret"][tail] = ret
            records["verdict"][tail] = [int(self.loaded.actions.of(int(v))) & 0xFFFFFFFF for v in ret]
            records["note"][tail] |= const("N_TAIL_CALL")
        wrong = np.flatnonzero(~own | (records["ret"].view(np.uint32) != batch.retval.astype(np.uint32)))
        if len(wrong):
            i = int(wrong[0])
            raise AccountingError(
                f"bug in pktassert: the inspector's record for packet #{start + i} does not match its test run "
                f"(tag {records['tag'][i]} for {wire.tags[i]}, return value {records['ret'][i]} for "
                f"{batch.retval[i]}); {len(wrong)} of {len(wire)} differ. Please report it.")
        return Part(records, len(wire), 0, Outputs.from_batch(wire, batch, start))

    def _refused(self, wire: Wire, error: np.ndarray, i: int, start: int) -> None:
        err, length = int(error[i]), int(wire.lengths[i]) - TRAILER
        limit = self.loaded.runner.max_len() - TRAILER
        if length > limit:
            raise InjectError(f"the kernel refused packet #{start + i}, a {length}-byte frame, for a test run; it "
                              f"takes XDP frames of 14 to {limit} bytes here. Fix: a shorter frame.")
        raise OSError(err, f"BPF_PROG_TEST_RUN refused packet #{start + i} ({length} bytes): {os.strerror(err)}")

    def close(self) -> None:
        pass  # nothing per test: the slots belong to the loaded program
