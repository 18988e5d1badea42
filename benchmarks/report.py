"""How the benchmarks time floods (the median of several after one to warm up) and print their one
result: a JSON object with --json, else one aligned line per key."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:>{width}}: {json.dumps(value) if isinstance(value, dict) else value}")


def timed_floods(inject: Callable[[], Any], n: int, check: Callable[[Any], None], floods: int = 3) -> tuple[dict[str, Any], Any]:
    """Packets/s of ``inject()`` (a flood of ``n``): one to warm up (the process's first flood pays one-off
    costs), then the median of ``floods``, each fully accounted and passed to ``check``; and the last capture."""
    inject()
    seconds = []
    for _ in range(floods):
        t = time.perf_counter()
        capture = inject()
        seconds.append(time.perf_counter() - t)
        assert capture.accounted == n, capture
        check(capture)
    return {"pps": round(n / statistics.median(seconds)), "pps_range": [round(n / max(seconds)), round(n / min(seconds))],
            "accounted": capture.accounted, "floods": floods}, capture
