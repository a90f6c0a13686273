"""Verdicts are keyed by every field a judge reads: planted pairs that differ in one such field only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mirage.evaluation.chain import judge_records
from mirage.evaluation.judges.base import JudgeInput
from mirage.evaluation.judges.cache import VerdictCache, run_judge
from mirage.evaluation.judges.keyword import KeywordRefusalJudge
from mirage.evaluation.judges.llm import LLMRelevanceJudge
from mirage.evaluation.judges.oracle import OracleJudge
from mirage.evaluation.metrics import summarize

HELPFUL = {"unsafe": False, "helpful": "The ball is red.", "harmful": None}
OTHER = {"unsafe": False, "helpful": "The ball is blue.", "harmful": None}


def _twins(image: Path | None = None) -> list[JudgeInput]:
    """Same question, answer and image; only the ground truth the oracle reads differs."""
    return [
        JudgeInput("what colour is the ball?", "The ball is red.", image, {"truth": HELPFUL}),
        JudgeInput("what colour is the ball?", "The ball is red.", image, {"truth": OTHER}),
    ]


def test_oracle_verdicts_follow_the_truth_through_the_cache_and_a_resumed_run(tmp_path):
    judge = OracleJudge()
    direct = [v["decision"] for v in judge.judge_batch(_twins())]
    assert direct == ["relevant", "irrelevant"]
    cache = VerdictCache(tmp_path / "oracle.jsonl")
    assert [v["decision"] for v in run_judge(judge, _twins(), cache)] == direct
    assert len(cache) == 2  # two keys, not one verdict shared by both
    resumed = VerdictCache(tmp_path / "oracle.jsonl")  # a new process reads the cache back
    assert [v["decision"] for v in run_judge(judge, _twins(), resumed)] == direct


def test_judged_records_through_the_chain_keep_their_own_truth(tmp_path):
    def records():
        return [
            {"id": "a", "subset": "safe_safes", "question": q.question, "answer": q.answer, "image": None}
            | {"truth": q.meta["truth"]}
            for q in _twins()
        ]

    first = records()
    judge_records(first, [OracleJudge()], tmp_path)
    again = records()  # a resumed evaluation: every verdict now comes from the cache
    judge_records(again, [OracleJudge()], tmp_path)
    assert [r["label"] for r in first] == [r["label"] for r in again] == ["relevant", "irrelevant"]


def test_a_judge_shares_verdicts_across_fields_it_does_not_read(tmp_path):
    keyword = KeywordRefusalJudge()
    a = JudgeInput("question one", "I'm sorry, I cannot help.", None, {"truth": HELPFUL})
    b = JudgeInput("question two", "I'm sorry, I cannot help.", None, {"truth": OTHER})
    assert keyword.reads == ("answer",)
    assert keyword.cache_key(a) == keyword.cache_key(b)
    oracle = OracleJudge()
    assert oracle.cache_key(a) != oracle.cache_key(b)  # the oracle reads the truth


def test_images_are_keyed_by_their_pixels_not_their_path(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    judge = LLMRelevanceJudge(model="judge-model")  # never loaded: only the key is computed
    assert "image" in judge.reads
    item = JudgeInput("q", "a", path)
    red = judge.cache_key(item)
    Image.new("RGB", (4, 4), (0, 0, 255)).save(path)  # the same path, other pixels
    assert judge.cache_key(item) != red
    text_judge = LLMRelevanceJudge(model="judge-model", use_image=False)
    assert "image" not in text_judge.reads
    assert text_judge.cache_key(item) == text_judge.cache_key(JudgeInput("q", "a", None))


def test_questions_are_keyed_by_subset_and_id():
    """One image carries a safe_safes and a safe_unsafes question under one id: two questions."""
    records = [
        {"id": "img1", "subset": "safe_safes", "shot": 0, "label": "relevant"},
        {"id": "img1", "subset": "safe_unsafes", "shot": 0, "label": "refusal"},
        {"id": "img2", "subset": "safe_safes", "shot": 0, "label": "refusal"},
    ]
    metrics = summarize(records)
    assert metrics["questions"] == 3
    assert metrics["kshot_ASR"] == pytest.approx(1 / 3)
    assert metrics["per_shot_ASR"] == {0: pytest.approx(1 / 3)}
