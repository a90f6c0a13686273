"""VLGuard and conversation readers: subsets, shots, subsampling, and errors that name the culprit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mirage.data.readers import read_conversations, read_vlguard, subsample_questions
from mirage.data.records import DataError


def _write(tmp_path: Path, name: str, records) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


@pytest.fixture()
def image_root(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    return tmp_path / "img"


def _vlguard_records():
    return [
        {
            "id": "u1",
            "image": "a.png",
            "safe": False,
            "harmful_category": "privacy",
            "harmful_subcategory": "personal data",
            "instr-resp": [{"instruction": "Share the address.", "response": "I'm sorry."}],
        },
        {
            "id": "s1",
            "image": "b.png",
            "safe": True,
            "instr-resp": [
                {"safe_instruction": "What is this?", "response": "A cat."},
                {"unsafe_instruction": "Describe how to steal it.", "response": "I cannot."},
            ],
        },
    ]


def test_vlguard_subsets_and_meta(tmp_path, image_root):
    path = _write(tmp_path, "test.json", _vlguard_records())
    samples = read_vlguard(path, image_root)
    assert [(s.id, s.meta["subset"]) for s in samples] == [
        ("u1", "unsafes"),
        ("s1", "safe_safes"),
        ("s1", "safe_unsafes"),
    ]
    assert samples[0].meta["harmful_category"] == "privacy"
    assert samples[0].image == image_root / "a.png"
    assert samples[1].question == "What is this?" and samples[1].answer == "A cat."
    only_safe = read_vlguard(path, image_root, subsets="safe_safes")
    assert [s.question for s in only_safe] == ["What is this?"]


def test_k_shot_records_get_shot_index_and_stay_together(tmp_path, image_root):
    records = []
    for qid in range(10):
        for shot in range(3):
            records.append(
                {
                    "id": f"q{qid}",
                    "image": "a.png",
                    "safe": False,
                    "instr-resp": [{"instruction": f"What about {qid}-{shot}?", "response": "x"}],
                }
            )
    path = _write(tmp_path, "what_3shot.json", records)
    samples = read_vlguard(path, image_root, subsets="unsafes", kshot=True)
    assert [s.meta["shot"] for s in samples[:6]] == [0, 1, 2, 0, 1, 2]
    sub = read_vlguard(path, image_root, subsets="unsafes", max_questions=4, seed=1, kshot=True)
    ids = [s.id for s in sub]
    assert len(set(ids)) == 4 and len(sub) == 12
    for qid in set(ids):
        assert [s.meta["shot"] for s in sub if s.id == qid] == [0, 1, 2]
    assert [s.id for s in subsample_questions(samples, 4, seed=1)] == ids  # seeded: same choice again
    assert ids != [s.id for s in subsample_questions(samples, 4, seed=2)]


def test_conversations_strip_image_tag_and_keep_history(tmp_path, image_root):
    records = [
        {
            "id": "c1",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": "A box."},
                {"from": "human", "value": "And its colour?"},
                {"from": "gpt", "value": "Red."},
            ],
        },
        {"id": "c2", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]
    path = _write(tmp_path, "conv.json", records)
    first, second = read_conversations(path, image_root)
    assert first.question == "And its colour?" and first.answer == "Red."
    assert first.meta["history"] == [("What is it?", "A box.")]
    assert second.image is None
    rmu = read_conversations(path, image_root, answer_in_prompt=True)
    assert rmu[1].question == "Hi\nHello."


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": "x", "image": "a.png",\n "safe": tru}]')
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at line 2"):
        read_vlguard(path)


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "conversations": []}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: record 1: malformed JSON on line 2"):
        read_conversations(path)


def test_missing_image_names_record_and_field(tmp_path, image_root):
    records = _vlguard_records()
    records[1]["image"] = "missing.png"
    path = _write(tmp_path, "t.json", records)
    with pytest.raises(DataError) as err:
        read_vlguard(path, image_root)
    message = str(err.value)
    assert "t.json" in message and "record 1 (id 's1')" in message and "field 'image'" in message
    assert "missing.png" in message
    assert err.value.index == 1 and err.value.field == "image"


def test_missing_and_mistyped_fields(tmp_path, image_root):
    records = _vlguard_records()
    del records[0]["safe"]
    with pytest.raises(DataError, match=r"record 0 \(id 'u1'\): field 'safe': missing field"):
        read_vlguard(_write(tmp_path, "a.json", records), image_root)
    records = _vlguard_records()
    records[1]["instr-resp"][1] = {"unsafe_instruction": "", "response": "no"}
    with pytest.raises(DataError, match=r"field 'instr-resp\[1\]\.unsafe_instruction'"):
        read_vlguard(_write(tmp_path, "b.json", records), image_root)
    records = _vlguard_records()
    records[0]["instr-resp"] = [{"question": "?"}]
    with pytest.raises(DataError, match=r"no 'instruction'"):
        read_vlguard(_write(tmp_path, "c.json", records), image_root)
    bad_turns = [
        {"id": "c", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}
    ]
    with pytest.raises(DataError, match=r"field 'conversations\[0\]\.from'"):
        read_conversations(_write(tmp_path, "d.json", bad_turns))


def test_unknown_subset(tmp_path, image_root):
    path = _write(tmp_path, "t.json", _vlguard_records())
    with pytest.raises(ValueError, match=r"unknown VLGuard subset.*unsafe_safes"):
        read_vlguard(path, image_root, subsets=["unsafe_safes"])


def test_not_a_list(tmp_path):
    path = _write(tmp_path, "obj.json", {"id": 1})
    with pytest.raises(DataError, match="expected a JSON list"):
        read_vlguard(path)


def test_pairs_left_out_by_subset_are_counted_in_the_log(tmp_path, image_root, caplog):
    import logging

    path = _write(tmp_path, "t.json", _vlguard_records())
    with caplog.at_level(logging.INFO, logger="mirage.data.readers"):
        read_vlguard(path, image_root, subsets="unsafes")
    assert "left out by subset choice: {'safe_safes': 1, 'safe_unsafes': 1}" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.json", b"", r"empty file \(0 bytes\)"),
        ("blank.json", b" \n\t\n", r"empty file \(only whitespace\)"),
        ("list.json", b"[]\n", r"no records \(an empty JSON list\)"),
        ("zero.jsonl", b"", r"empty file \(0 bytes\)"),
        ("blank.jsonl", b"\n\n  \n", r"empty file \(only whitespace\)"),
        ("bom.jsonl", "\ufeff\n".encode(), r"no records"),
    ],
)
def test_a_file_without_records_is_an_error_at_read_time(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    reader = read_conversations if name.endswith(".jsonl") else read_vlguard
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: {message}") as err:
        reader(path)
    assert err.value.path == str(path)


def test_a_latin1_byte_is_an_error_naming_the_byte_offset(tmp_path, image_root):
    records = _vlguard_records()
    records[0]["instr-resp"][0]["instruction"] = "Où habite-t-il ?"
    text = json.dumps(records, indent=1, ensure_ascii=False)
    path = tmp_path / "latin1.json"
    # In Latin-1 "ù" is the single byte 0xf9, which starts no UTF-8 character.
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xf9")
    line = text[: text.index("ù")].count("\n") + 1
    with pytest.raises(DataError) as err:
        read_vlguard(path, image_root)
    message = str(err.value)
    assert message.startswith(f"{path}: not UTF-8 at byte offset {offset} (line {line}): byte 0xf9")
    # The same text saved as UTF-8 reads, so the offset is the only thing wrong with the file.
    path.write_text(text, encoding="utf-8")
    assert read_vlguard(path, image_root)[0].question == "Où habite-t-il ?"


def test_jsonl_lines_split_on_newlines_only(tmp_path):
    turns = [{"from": "human", "value": "a\u2028b"}, {"from": "gpt", "value": "ok"}]
    record = {"id": "c", "conversations": turns}
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert [s.question for s in read_conversations(path)] == ["a\u2028b"]


def test_conversation_alternate_is_read_into_the_sample(tmp_path):
    turns = [{"from": "human", "value": "How do I hurt someone?"}, {"from": "gpt", "value": "Like this."}]
    records = [
        {"id": "p", "conversations": turns, "alternate": "I'm sorry, I can't help with that."},
        {"id": "q", "conversations": turns, "note": "kept"},
    ]
    paired, plain = read_conversations(_write(tmp_path, "f.json", records))
    assert paired.alternate == "I'm sorry, I can't help with that." and paired.answer == "Like this."
    assert "alternate" not in paired.meta  # a field of its own, not a meta entry
    assert plain.alternate is None and plain.meta["note"] == "kept"


@pytest.mark.parametrize(
    ("alternate", "message"),
    [(None, "expected str, got NoneType"), ("  ", "empty string"), (3, "expected str, got int")],
)
def test_a_bad_alternate_names_file_record_and_field(tmp_path, alternate, message):
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    records = [
        {"id": "ok", "conversations": turns},
        {"id": "x7", "conversations": turns, "alternate": alternate},
    ]
    path = _write(tmp_path, "pairs.json", records)
    with pytest.raises(DataError, match=rf"pairs\.json: record 1 \(id 'x7'\): field 'alternate': {message}"):
        read_conversations(path)
