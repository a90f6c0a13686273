"""Resumable JSON Lines files (generations.jsonl, the verdict cache) after a writer was killed mid-write."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mirage.evaluation.judges.cache import VerdictCache
from mirage.evaluation.results import JsonlAppender, read_jsonl
from mirage.utils.jsonl import JsonlError

RECORDS = [
    {"key": "q1|unsafes|none|0", "answer": "Je ne peux pas aider, désolé."},
    {"key": "q2|unsafes|none|0", "answer": "日本の住所は教えられません。"},
]


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _cut_inside_a_character(record: dict) -> bytes:
    """The record's bytes cut after the first byte of its first multi-byte character."""
    data = _line(record)
    first = next(i for i, byte in enumerate(data) if byte >= 0x80)
    cut = data[: first + 1]
    with pytest.raises(UnicodeDecodeError):
        cut.decode("utf-8")  # the cut really is inside a character
    return cut


@pytest.mark.parametrize("torn", [RECORDS[1], {"key": "q3", "answer": "é"}])
def test_generations_cut_inside_a_multibyte_character(tmp_path: Path, caplog, torn) -> None:
    path = tmp_path / "generations.jsonl"
    complete = b"".join(_line(r) for r in RECORDS)
    path.write_bytes(complete + _cut_inside_a_character(torn))
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == RECORDS
    assert "truncated last line 3" in caplog.text
    JsonlAppender(path).append([{"key": "q3", "answer": "ok"}])
    assert path.read_bytes() == complete + _line({"key": "q3", "answer": "ok"})  # the fragment is gone
    assert [r["key"] for r in read_jsonl(path)] == [r["key"] for r in RECORDS] + ["q3"]


def test_a_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "generations.jsonl"
    complete = b"".join(_line(r) for r in RECORDS)
    path.write_bytes(complete[:-1])  # the last record is whole; only its newline is missing
    records = read_jsonl(path)
    assert records == RECORDS
    # What resume counts is what the file holds: one record per non-blank line.
    assert len(records) == len([line for line in path.read_bytes().split(b"\n") if line.strip()])
    JsonlAppender(path).append([{"key": "q3"}])
    assert path.read_bytes() == complete + _line({"key": "q3"})  # appended on a line of its own
    assert len(read_jsonl(path)) == 3


def test_a_bad_line_before_the_last_is_an_error_naming_file_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "generations.jsonl"
    first = _line(RECORDS[0])
    path.write_bytes(first + _cut_inside_a_character(RECORDS[1]) + b"\n" + _line(RECORDS[0]))
    offset = len(first) + _line(RECORDS[1]).index("日".encode())
    expected = rf"generations\.jsonl: not UTF-8 on line 2 \(byte offset {offset}\)"
    with pytest.raises(JsonlError, match=expected):
        read_jsonl(path)
    path.write_bytes(first + b'{"key": "x", "ans\n' + first)  # torn once, then appended to: damage
    with pytest.raises(ValueError, match=r"generations\.jsonl: malformed JSON on line 2 \(byte offset"):
        read_jsonl(path)


def test_missing_file_reads_as_empty_and_appender_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "run" / "generations.jsonl"
    assert read_jsonl(path) == []
    JsonlAppender(path).append(RECORDS)
    assert read_jsonl(path) == RECORDS


def test_verdict_cache_cut_inside_a_multibyte_character(tmp_path: Path, caplog) -> None:
    path = tmp_path / "verdicts.jsonl"
    verdicts = [{"key": "a", "verdict": {"decision": "refusal", "why": "désolé"}}]
    verdicts.append({"key": "b", "verdict": {"decision": None, "why": "日本"}})
    complete = _line(verdicts[0])
    path.write_bytes(complete + _cut_inside_a_character(verdicts[1]))
    with caplog.at_level(logging.WARNING):
        cache = VerdictCache(path)
    assert "truncated" in caplog.text
    assert len(cache) == 1 and cache.get("a") == verdicts[0]["verdict"] and "b" not in cache
    assert path.read_bytes() == complete  # cut off on open, so the next append parses
    cache.put_many([("b", verdicts[1]["verdict"])])
    reopened = VerdictCache(path)
    assert len(reopened) == 2 and reopened.get("b") == verdicts[1]["verdict"]


def test_verdict_cache_keeps_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    lines = [_line({"key": k, "verdict": {"decision": k}}) for k in ("a", "b")]
    path.write_bytes(lines[0] + lines[1][:-1])
    cache = VerdictCache(path)
    assert len(cache) == 2 and cache.get("b") == {"decision": "b"}
    cache.put_many([("c", {"decision": "c"})])
    assert path.read_bytes() == lines[0] + lines[1] + _line({"key": "c", "verdict": {"decision": "c"}})
    assert len(VerdictCache(path)) == 3 == len(path.read_bytes().splitlines())


def test_verdict_cache_skips_a_damaged_middle_line_with_a_warning(tmp_path: Path, caplog) -> None:
    # A cache can judge a lost verdict again, so damage before the last line is skipped, not fatal.
    path = tmp_path / "verdicts.jsonl"
    good = _line({"key": "a", "verdict": {}})
    path.write_bytes(good + b'{"key": "x"}\n' + b"\xe9t\xe9\n" + _line({"key": "b", "verdict": {}}))
    with caplog.at_level(logging.WARNING):
        cache = VerdictCache(path)
    assert len(cache) == 2 and "a" in cache and "b" in cache
    assert "missing field on line 2" in caplog.text and "no 'verdict'" in caplog.text
    assert f"not UTF-8 on line 3 (byte offset {len(good) + 13})" in caplog.text
