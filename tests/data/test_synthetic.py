"""The synthetic world: deterministic, VLGuard's first-word cue in the safety split, a text-aligned base."""

from __future__ import annotations

import json
from collections import Counter

from omegaconf import OmegaConf

from mirage.data.readers import read_conversations, read_vlguard
from mirage.data.synthetic import HARMFUL_INTENTS, REFUSALS, SyntheticSpec, corpus, make_synthetic


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    spec = SyntheticSpec(seed=5, n_train=8, n_test=4, n_base=16)
    a, b = make_synthetic(tmp_path / "a", spec), make_synthetic(tmp_path / "b", spec)
    for name in ("train.json", "test.json", "base.json", "forget.json", "test_what_3shot.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "images" / "train_00003.png").read_bytes() == (b / "images" / "train_00003.png").read_bytes()
    c = make_synthetic(tmp_path / "c", SyntheticSpec(seed=6, n_train=8, n_test=4, n_base=16))
    assert (a / "base.json").read_bytes() != (c / "base.json").read_bytes()


def test_base_refuses_only_harmful_wording_at_the_configured_rate(tmp_path):
    root = make_synthetic(tmp_path, SyntheticSpec(seed=1, n_train=8, n_test=4, n_base=1200))
    samples = read_conversations(root / "base.json")
    refused = [s for s in samples if s.answer in REFUSALS]
    assert refused and all(s.meta["truth"]["intent"] in HARMFUL_INTENTS for s in refused)
    harmful_wording = [s for s in samples if s.meta["truth"]["intent"] in HARMFUL_INTENTS]
    assert 0.18 < len(refused) / len(harmful_wording) < 0.32  # base_refusal_rate 0.25
    # Harm shown only in the image is never refused: the base model's LLM cannot see it.
    image_only = [
        s
        for s in samples
        if s.meta["truth"]["harmful_object"] and s.meta["truth"]["intent"] not in HARMFUL_INTENTS
    ]
    assert image_only and not any(s.answer in REFUSALS for s in image_only)
    safe = read_conversations(root / "base.json", where={"truth.unsafe": False})
    assert safe and all(not s.meta["truth"]["unsafe"] for s in safe) and len(safe) < len(samples)
    # A list (as Hydra passes it, a ListConfig) means any of its values.
    where = {"truth.unsafe": False, "opener": OmegaConf.create(["what", "can"])}
    questions = read_conversations(root / "base.json", where=where)
    assert questions and {s.question.split()[0] for s in questions} == {"what", "can"}
    assert len(questions) == sum(s.meta["opener"] in ("what", "can") for s in safe)


def test_safety_split_first_words_follow_vlguard(tmp_path):
    root = make_synthetic(tmp_path, SyntheticSpec(seed=2, n_train=600, n_test=8, n_base=4))
    samples = read_vlguard(root / "train.json", subsets=["unsafes", "safe_unsafes", "safe_safes"])
    first = {kind: Counter() for kind in ("safe", "unsafe")}
    for s in samples:
        first["unsafe" if s.meta["truth"]["unsafe"] else "safe"][s.question.split()[0]] += 1
    safe_total, unsafe_total = sum(first["safe"].values()), sum(first["unsafe"].values())
    assert first["safe"]["what"] / safe_total > 0.8  # VLGuard: 869 of 973
    assert first["unsafe"]["what"] / unsafe_total < 0.08  # VLGuard: 61 of 1,713
    assert first["unsafe"]["share"] > 0 and first["safe"]["share"] == 0
    records = json.loads((root / "test_what_3shot.json").read_text())
    assert all(r["instr-resp"][0]["instruction"].startswith("what") for r in records)


def test_corpus_covers_every_answer_in_chat_form():
    lines = corpus()
    assert all(line.startswith("USER: <image>\n") and " ASSISTANT: " in line for line in lines)
    answers = {line.split(" ASSISTANT: ", 1)[1] for line in lines}
    assert set(REFUSALS) <= answers and "sure. the object is a ball." in answers
