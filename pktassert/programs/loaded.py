"""What every loader gives the rest of pktassert: a filter loaded behind our inspector.

The bcc loader (pktassert/programs/bcc_program.py) and the libbpf loader (pktassert/programs/libbpf_program.py) each provide the
program's fds and maps; tags, record slots, test runs and fresh state work the same over fds here.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from typing import Any

import numpy as np

from pktassert.kernel import libbpf, map_reset
from pktassert.kernel.test_run import TestRunner


class Loaded:
    """A filter loaded in the kernel behind the inspector: its entry fd, maps, and record layout."""

    fd: int                 # the inspector's XDP program, which calls the filter
    record_type: Any        # ctypes type of struct pktassert_record as this program laid it out
    subject: Any            # what was loaded (BccSource, LibbpfSource, ObjectFile)
    hook: Any               # where it hooks (pktassert/hooks/table.py)
    TAG_LIMIT = 0xFFFFFFFF  # PKTASSERT_UNTAGGED

    def __init__(self) -> None:
        self._unit_slots: mmap.mmap | None = None
        self._next_tag = 1  # never 0: a slot no frame has written reads as tag 0
        self.prints = False  # the filter calls bpf_trace_printk: the inspector was built to mark packets
        # What the loader put into the filter's maps while it loaded the object, by map name: key -> value
        # as the syscall writes it (libbpf: program arrays and maps of maps declared with `.values`, their
        # values the fds of this object's programs and maps). Fresh state is that, not empty maps.
        self.loader_state: dict[str, dict[bytes, bytes]] = {}

    def mark_prints(self, nonce: int) -> None:
        """Have the inspector mark each packet in the trace with ``nonce`` (0: stop), on every CPU."""
        record = ctypes.sizeof(self.record_type)
        size = -(-(record + 24) // 8) * 8  # struct pktassert_scratch_value (bpf/stage.h): the record, magic,
        # printk_nonce, trailer[2], egress, pad
        cpus = libbpf.possible_cpus()
        buf = (ctypes.c_uint8 * (size * cpus))()
        for cpu in range(cpus):
            ctypes.c_uint32.from_buffer(buf, cpu * size + record + 4).value = nonce
        key = ctypes.c_uint32(0)
        if libbpf.lib().bpf_map_update_elem(self.our_map_fd("pktassert_scratch"), ctypes.byref(key), buf, 0):
            raise OSError(ctypes.get_errno(), "pktassert_scratch")

    @property
    def program(self) -> Any:
        return self.subject

    @property
    def actions(self) -> Any:
        """The hook's action enum (Verdict for XDP, TcVerdict for tc)."""
        return self.hook.actions

    # -- provided by each loader --------------------------------------------------------------
    def our_map_fd(self, name: str) -> int:
        """The fd of one of the inspector's maps (pktassert_slots, _counters, _events)."""
        raise NotImplementedError

    def map_fds(self) -> dict[str, int]:
        """Every map of the filter's own (not the inspector's), by name: its fd."""
        raise NotImplementedError

    def state_maps(self) -> dict[str, Any]:
        """The filter's own maps by name, as tables StateMap can use."""
        raise NotImplementedError

    def program_fd(self, func: str) -> int:
        """Another program of the filter's, by function name (for program arrays)."""
        raise NotImplementedError

    def bare_fd(self) -> int:
        """The filter alone, without the inspector (for cost()), with the same maps."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    # Tags are unique for the life of the loaded program, so a record left in a slot by an earlier
    # frame (another test's) can never pass for a later frame's; and never 0, so a slot that no frame
    # has written (all zeros) cannot pass for one.
    def take_tags(self, n: int) -> int:
        """The first of ``n`` fresh consecutive tags."""
        if self._next_tag + n >= self.TAG_LIMIT:
            self.forget_tags()
        first = self._next_tag
        self._next_tag += n
        return first

    def forget_tags(self) -> None:
        """After 4 billion frames the tags wrap: every slot forgotten, so old ones cannot match again."""
        slots = np.frombuffer(self.unit_slots(), np.uint8)
        slots[:] = 0
        del slots
        self._next_tag = 1

    def set_next_tag(self, tag: int) -> None:
        """Tags below ``tag`` count as used (a frame that goes through several stages keeps one tag)."""
        self._next_tag = max(self._next_tag, tag)

    @functools.cached_property
    def runner(self) -> TestRunner:
        """Test runs of this program (its buffers are reused, so one per program)."""
        return TestRunner(self.fd)

    @functools.cached_property
    def bare_runner(self) -> TestRunner:
        """Test runs of the filter without the inspector (for cost())."""
        return TestRunner(self.bare_fd())

    def unit_slots(self) -> mmap.mmap:
        """The inspector's record slots, mapped into our memory."""
        if self._unit_slots is None:
            fd = self.our_map_fd("pktassert_slots")
            info = map_reset.info(fd)
            self._unit_slots = mmap.mmap(fd, info.max_entries * ctypes.sizeof(self.record_type),
                                         mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return self._unit_slots

    def read_slots(self, first_tag: int, records: np.ndarray) -> np.ndarray:
        """Copy the records of tags first_tag... from the slots into ``records`` (consecutive
        tags: at most two slices)."""
        # As rows of bytes: numpy copies a dtype without its padding fields field by field (measured:
        # 15 ms per 262,144 records, 3 ms as bytes).
        size = records.dtype.itemsize
        slots = np.frombuffer(self.unit_slots(), np.uint8).reshape(-1, size)
        rows = records.view(np.uint8).reshape(len(records), size)
        n, at = len(records), first_tag % len(slots)
        head = min(n, len(slots) - at)
        rows[:head] = slots[at:at + head]
        rows[head:] = slots[:n - head]
        del slots, rows  # the mmap must have no views left when the program is closed
        return records

    @functools.cached_property
    def resettable(self) -> bool:
        """Whether every map can be emptied between tests (a bloom filter cannot: then the program
        is loaded afresh for each test)."""
        return all(map_reset.resettable(fd) for fd in self.map_fds().values())

    def reset(self) -> None:
        """Fresh state for the next test, the state the loader left: every map of the filter emptied,
        whatever its type (pktassert/kernel/map_reset.py), then given back what the loader put in it at load time
        (``loader_state``); and our counters zeroed."""
        for name, fd in self.map_fds().items():
            map_reset.reset(fd)
            map_reset.fill(fd, self.loader_state.get(name, {}))
        map_reset.reset(self.our_map_fd("pktassert_counters"))

    def close(self) -> None:
        if self._unit_slots is not None:
            self._unit_slots.close()
            self._unit_slots = None
        self._close()
