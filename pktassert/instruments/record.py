"""The one place the Python side reads the kernel side's contracts (bpf/record.h, bpf/fate.h).

Constants come from the header's #defines; the record's layout comes from the compiled program
(bcc's own description of struct pktassert_record), so no field offset is written down twice.
"""

from __future__ import annotations

import ctypes
import functools
import re
from typing import Any

import numpy as np

from pktassert.bpf import DIR as HERE


@functools.cache
def constants() -> dict[str, int]:
    text = (HERE / "record.h").read_text() + (HERE / "fate.h").read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"^#define\s+(PKTASSERT_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.MULTILINE)}


def const(name: str) -> int:
    """A #define of record.h or fate.h by its name without the PKTASSERT_ prefix."""
    return constants()["PKTASSERT_" + name]


def dtype_of(record_type: type[ctypes.Structure]) -> np.dtype:
    """numpy's view of struct pktassert_record (or pktassert_fate), from the ctypes type the loader built for the compiled
    program (bcc's description, or the object's BTF): the named fields at their offsets, without the
    padding fields each describer names its own way, so both loaders give one and the same dtype."""
    full = np.dtype(record_type)
    fields: Any = full.fields or {}
    names = [n for n in fields if not n.startswith("__pad")]
    spec: dict[str, Any] = {"names": names, "formats": [fields[n][0] for n in names],
                            "offsets": [fields[n][1] for n in names], "itemsize": full.itemsize}
    return np.dtype(spec)  # type: ignore[call-overload]  # a dict spec: numpy accepts it, its stubs do not
