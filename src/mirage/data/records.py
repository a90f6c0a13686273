"""Record types and their validation.

Every reader turns a file into a list of :class:`Sample`. A bad record raises
:class:`DataError` naming the file, the record's index (and id when it has one) and the
field, so a user can open the file and fix it; nothing is silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A problem with one record of one data file."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        index: int | None = None,
        record_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.index, self.record_id, self.field = str(path), index, record_id, field
        where = [self.path]
        if index is not None:
            where.append(f"record {index}" + (f" (id {record_id!r})" if record_id is not None else ""))
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}")


@dataclass
class Sample:
    """One (image, question, answer) example in any split.

    ``alternate`` is another answer to the same prompt, e.g. VLGuard's refusal beside the harmful answer
    of a forget record: with ``answer`` it makes a preference pair (the training collator's ``alternate``
    view, which preference methods read).
    """

    id: str
    question: str
    answer: str | None
    image: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    alternate: str | None = None


def read_data_text(path: str | Path) -> str:
    """A data file's text: a missing or empty file, or bytes that are not UTF-8, are a :class:`DataError`.

    Empty means zero bytes or only whitespace. Bad bytes are reported by byte offset and line
    (the offset that ``UnicodeDecodeError`` gives, so ``head -c`` or a hex editor finds them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, "empty file (0 bytes)" if not data else "empty file (only whitespace)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            path,
            f"not UTF-8 at byte offset {err.start} (line {line_no}): byte 0x{data[err.start]:02x}, "
            f"{err.reason}; re-save the file as UTF-8",
        ) from err
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write is not part of the JSON


def load_json_records(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of objects, or JSON Lines; errors name the line or record that broke.

    A file without records (zero bytes, only whitespace, ``[]``, a JSON Lines file of blank
    lines) is an error here, at read time, rather than an empty split or benchmark later on.
    """
    path = Path(path)
    text = read_data_text(path)
    if path.suffix == ".jsonl":
        records = []
        # Split on newlines only: str.splitlines() also breaks at U+2028 and others inside JSON strings.
        for line_no, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(
                    path, f"malformed JSON on line {line_no}: {err.msg}", index=len(records)
                ) from err
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from err
        if not isinstance(records, list):
            raise DataError(path, f"expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(path, "no records (an empty JSON list)" if path.suffix != ".jsonl" else "no records")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(path, f"expected an object, got {type(record).__name__}", index=index)
    return records


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, index: int) -> Any:
    """``record[key]`` checked for presence and type."""
    record_id = record.get("id") if isinstance(record.get("id"), str) else None
    if key not in record:
        raise DataError(path, "missing field", index=index, record_id=record_id, field=key)
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(
            path, f"expected {names}, got {type(value).__name__}", index=index, record_id=record_id, field=key
        )
    if isinstance(value, str) and key != "id" and not value.strip():
        raise DataError(path, "empty string", index=index, record_id=record_id, field=key)
    return value


def resolve_image(
    image: str | None,
    image_root: Path | None,
    path: Path,
    index: int,
    record_id: str,
    field_name: str = "image",
    check_exists: bool = True,
) -> Path | None:
    """The image's absolute path; a missing file is an error naming the record."""
    if image is None:
        return None
    resolved = Path(image) if image_root is None else Path(image_root) / image
    if check_exists and not resolved.is_file():
        raise DataError(
            path, f"image not found: {resolved}", index=index, record_id=record_id, field=field_name
        )
    return resolved
