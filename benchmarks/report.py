"""How every benchmark prints its one result: a JSON object with --json, else one aligned line per key."""

from __future__ import annotations

import json
from typing import Any


def show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:>{width}}: {json.dumps(value) if isinstance(value, dict) else value}")
