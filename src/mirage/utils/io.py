"""Writing result files that every JSON reader accepts, atomically. Imports nothing of mirage."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``: JSON has no NaN, and a bare ``NaN``
    in a metrics file breaks strict readers (``jq``, browsers, other languages)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | Path, payload: Any) -> None:
    """Strict JSON (non-finite numbers as null), written to a temporary file and renamed into place,
    so a reader never sees half a file."""
    path = Path(path)
    text = json.dumps(json_safe(payload), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
