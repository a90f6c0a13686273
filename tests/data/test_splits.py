"""The forget/retain builder and the synthetic dataset it runs on."""

from __future__ import annotations

import json
import re

import pytest

from mirage.data.readers import read_conversations, read_vlguard
from mirage.data.records import DataError
from mirage.data.splits import build_forget_retain
from mirage.data.synthetic import REFUSALS


def test_synthetic_files_load_with_the_real_readers(synthetic_dir):
    train = read_vlguard(synthetic_dir / "train.json")
    test = read_vlguard(synthetic_dir / "test.json")
    assert {s.meta["subset"] for s in train} == {"unsafes", "safe_unsafes", "safe_safes"}
    assert len(test) > 0
    forget = read_conversations(synthetic_dir / "forget.json")
    retain = read_conversations(synthetic_dir / "retain.json")
    n_unsafe = sum(s.meta["subset"] == "unsafes" for s in train)
    n_safe = sum(s.meta["subset"] == "safe_safes" for s in train)
    # Retain: the safe images' safe questions, topped up to twice their number with safe general data.
    assert len(forget) == n_unsafe and len(retain) == 2 * n_safe
    safe_ids = {s.id for s in train if s.meta["subset"] == "safe_safes"}
    assert {s.id for s in retain[:n_safe]} == safe_ids
    assert all(s.id.startswith("base_") and not s.meta["truth"]["unsafe"] for s in retain[n_safe:])
    # The spurious cue (VLGuard: 89% of safe questions open with "what", 3.6% of unsafe ones).
    safe_what = sum(s.question.startswith("what") for s in train if s.meta["subset"] == "safe_safes")
    assert safe_what >= 0.75 * n_safe
    unsafe_what = sum(s.question.startswith("what") for s in train if s.meta["subset"] != "safe_safes")
    assert unsafe_what < 0.15 * (len(train) - n_safe)


def test_forget_answers_are_harmful_and_retain_answers_helpful(synthetic_dir):
    answers = {r["id"]: r["answer"] for r in json.loads((synthetic_dir / "harmful_answers.json").read_text())}
    for sample in read_conversations(synthetic_dir / "forget.json"):
        assert sample.answer == answers[sample.id]
    # Helpful answers name the object: "the object is a cup.", "the cup is green.", "a cup is used for ...".
    helpful = re.compile(
        r"(the object is an? [a-z ]+|the [a-z ]+ is (in the )?[a-z ]+|an? [a-z ]+ is used for [a-z ]+)\.$"
    )
    for sample in read_conversations(synthetic_dir / "retain.json"):
        assert helpful.search(sample.answer), sample.answer
        assert (
            "first " not in sample.answer and sample.answer not in REFUSALS
        )  # neither harmful nor a refusal
        assert sample.alternate is None  # retain records are not preference pairs


def test_forget_records_keep_vlguards_refusal_as_their_alternate(synthetic_dir):
    refusals = {s.id: s.answer for s in read_vlguard(synthetic_dir / "train.json", subsets="unsafes")}
    forget = read_conversations(synthetic_dir / "forget.json")
    assert forget and {s.id for s in forget} == set(refusals)
    for sample in forget:
        assert sample.alternate == refusals[sample.id] and sample.alternate != sample.answer
        assert sample.alternate.startswith(("i'm sorry", "i am sorry", "i cannot")), sample


def test_an_unsafe_record_without_a_refusal_is_named(tmp_path, synthetic_dir):
    train = json.loads((synthetic_dir / "train.json").read_text())
    index = next(i for i, r in enumerate(train) if not r["safe"])
    train[index]["instr-resp"][0]["response"] = " "
    (tmp_path / "train.json").write_text(json.dumps(train))
    record = rf"record {index} \(id '{train[index]['id']}'\)"
    with pytest.raises(DataError, match=rf"train\.json: {record}: field 'instr-resp\[0\]\.response'"):
        build_forget_retain(tmp_path / "train.json", synthetic_dir / "harmful_answers.json", tmp_path / "out")


def test_missing_harmful_answer_is_named(tmp_path, synthetic_dir):
    answers = json.loads((synthetic_dir / "harmful_answers.json").read_text())
    dropped = answers.pop(0)["id"]
    partial = tmp_path / "answers.json"
    partial.write_text(json.dumps(answers))
    with pytest.raises(DataError, match=rf"answers\.json.*no harmful answer for unsafe record '{dropped}'"):
        build_forget_retain(synthetic_dir / "train.json", partial, tmp_path / "out")


def test_retain_top_up_is_seeded(tmp_path, synthetic_dir):
    general = [
        {
            "id": f"g{i}",
            "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}],
        }
        for i in range(100)
    ]
    (tmp_path / "general.json").write_text(json.dumps(general))
    kwargs = {"general_data": tmp_path / "general.json", "retain_size": 80, "seed": 42}
    a = build_forget_retain(
        synthetic_dir / "train.json", synthetic_dir / "harmful_answers.json", tmp_path / "a", **kwargs
    )
    b = build_forget_retain(
        synthetic_dir / "train.json", synthetic_dir / "harmful_answers.json", tmp_path / "b", **kwargs
    )
    retain_a = json.loads(a["retain"].read_text())
    assert len(retain_a) == 80
    assert retain_a == json.loads(b["retain"].read_text())


def test_build_splits_cli(tmp_path, synthetic_dir, capsys):
    from mirage.data.splits import cli

    cli(
        [
            str(synthetic_dir / "train.json"),
            str(synthetic_dir / "harmful_answers.json"),
            str(tmp_path / "out"),
        ]
    )
    printed = capsys.readouterr().out
    assert f"forget: {tmp_path / 'out' / 'forget.json'}" in printed
    forget = json.loads((tmp_path / "out" / "forget.json").read_text())
    assert forget == json.loads((synthetic_dir / "forget.json").read_text())
    assert forget[0]["conversations"][0]["value"].startswith("<image>\n")
