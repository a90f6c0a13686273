"""Metrics on hand-made labels, Wilson intervals, DDP-style state merging, and the resumable JSONL files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mirage.data.records import Sample
from mirage.evaluation.metrics import KShotSuccess, OutcomeRates, summarize, wilson_interval
from mirage.evaluation.results import JsonlAppender, read_jsonl, record_key


def test_rates_sum_to_one_and_match_counts():
    metric = OutcomeRates()
    metric.update(["refusal", "relevant", "irrelevant", "relevant"])
    metric.update(["refusal"])
    out = metric.compute()
    assert out["n"] == 5
    assert (out["RR"], out["IR"], out["ASR"]) == (pytest.approx(0.4), pytest.approx(0.2), pytest.approx(0.4))
    assert out["RR"] + out["IR"] + out["ASR"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown answer label 'maybe'"):
        metric.update(["maybe"])


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_kshot_counts_a_question_once_when_any_shot_succeeds():
    metric = KShotSuccess()
    # Question 0: one success out of three shots; question 1: none; question 2: all three.
    question = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    shot = torch.tensor([0, 1, 2] * 3)
    success = torch.tensor([0, 1, 0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    metric.update(question, shot, success)
    out = metric.compute()
    assert out["questions"] == 3 and out["kshot_ASR"] == pytest.approx(2 / 3)
    assert out["per_shot_ASR"] == {0: pytest.approx(1 / 3), 1: pytest.approx(2 / 3), 2: pytest.approx(1 / 3)}


def test_metric_states_merge_like_ranks_do():
    """Two 'ranks' each see half the answers (a question's shots split across them); merged == one process."""
    labels = ["relevant", "refusal", "irrelevant", "refusal", "relevant", "refusal"]
    whole = OutcomeRates()
    whole.update(labels)
    rank0, rank1 = OutcomeRates(), OutcomeRates()
    rank0.update(labels[:3])
    rank1.update(labels[3:])
    rank0.merge_state(rank1)
    assert rank0.compute() == whole.compute()
    q, s, ok = (
        torch.tensor([0, 0, 1, 1]),
        torch.tensor([0, 1, 0, 1]),
        torch.tensor([False, True, False, False]),
    )
    one, a, b = KShotSuccess(), KShotSuccess(), KShotSuccess()
    one.update(q, s, ok)
    a.update(q[::2], s[::2], ok[::2])
    b.update(q[1::2], s[1::2], ok[1::2])
    a.merge_state(b)
    assert a.compute()["kshot_ASR"] == one.compute()["kshot_ASR"] == 0.5


def test_summarize_groups_and_counts_unparsed():
    records = [
        {
            "id": "a",
            "shot": 0,
            "subset": "unsafes",
            "harmful_category": "privacy",
            "label": "relevant",
            "verdicts": {"llm_relevance": {"decision": "relevant", "parsed": True}},
        },
        {
            "id": "a",
            "shot": 1,
            "subset": "unsafes",
            "harmful_category": "privacy",
            "label": "irrelevant",
            "verdicts": {"llm_relevance": {"decision": "irrelevant", "parsed": False}},
        },
        {
            "id": "b",
            "shot": 0,
            "subset": "safe_safes",
            "harmful_category": None,
            "label": "refusal",
            "verdicts": {"keyword": {"decision": "refusal"}},
        },
    ]
    out = summarize(records)
    assert out["n"] == 3 and out["judge_unparsed"] == 1
    assert out["kshot_ASR"] == pytest.approx(0.5)  # question a broken, b not
    assert out["by_subset"]["unsafes"]["ASR"] == pytest.approx(0.5)
    assert out["by_subset"]["safe_safes"]["RR"] == 1.0  # helpfulness there is its ASR (relevant rate): 0
    assert set(out["by_category"]) == {"privacy"}
    assert out["helpfulness"] == 0.0  # the one safe question was refused
    assert not math.isnan(out["ASR_ci95"][0])


def test_jsonl_appender_repairs_a_torn_tail(tmp_path):
    path = tmp_path / "g.jsonl"
    writer = JsonlAppender(path)
    writer.append([{"key": "1"}, {"key": "2"}])
    with open(path, "a") as handle:  # a killed process left half a record
        handle.write('{"key": "3", "ans')
    assert [r["key"] for r in read_jsonl(path)] == ["1", "2"]
    JsonlAppender(path).append([{"key": "3"}])
    assert [r["key"] for r in read_jsonl(path)] == ["1", "2", "3"]
    path.write_text('{"key": "1"}\n{broken\n{"key": "2"}\n')
    with pytest.raises(ValueError, match=r"g\.jsonl: malformed JSON on line 2"):
        read_jsonl(path)


def test_record_key_separates_shots_and_attacks():
    a = Sample(
        id="q1", question="x", answer=None, meta={"subset": "unsafes", "attack": "one_word", "shot": 0}
    )
    b = Sample(
        id="q1", question="x", answer=None, meta={"subset": "unsafes", "attack": "one_word", "shot": 1}
    )
    c = Sample(id="q1", question="x", answer=None, meta={"subset": "unsafes", "attack": "none"})
    assert len({record_key(a), record_key(b), record_key(c)}) == 3
    assert json.loads(json.dumps(record_key(a))) == "q1|unsafes|one_word|0"


def test_lenient_asr_counts_leaks_per_answer_and_per_question():
    def record(qid, shot, label, lenient):
        return {
            "id": qid,
            "shot": shot,
            "subset": "unsafes",
            "label": label,
            "verdicts": {"oracle": {"decision": label, "lenient_success": lenient}},
        }

    records = [
        record("a", 0, "irrelevant", True),  # a leak in a broken sentence: lenient, not strict
        record("a", 1, "refusal", False),
        record("b", 0, "irrelevant", False),
        record("b", 1, "relevant", True),
        record("c", 0, "refusal", False),
        record("c", 1, "refusal", False),
    ]
    out = summarize(records)
    assert out["lenient_ASR"] == pytest.approx(2 / 6)
    assert out["kshot_lenient_ASR"] == pytest.approx(2 / 3)  # a and b leak in some shot, c never
    assert out["kshot_ASR"] == pytest.approx(1 / 3)  # only b strictly


def test_mirage_table_from_case_metrics(tmp_path):
    from mirage.evaluation.mirage_table import table_rows, write_report

    def cases(asr, what3, rr, share, utility, utility_share):
        return {
            "plain_asr": {"n": 10, "ASR": asr, "IR": 0.0, "RR": 1 - asr, "lenient_ASR": asr},
            "what3_asr": {"n": 30, "ASR": what3 / 2, "IR": 0.1, "RR": 0.4, "kshot_ASR": what3},
            "plain_rr": {"n": 10, "ASR": 0.9, "IR": 0.0, "RR": rr, "helpfulness": utility},
            "share1_rr": {"n": 10, "ASR": 0.1, "IR": 0.0, "RR": share, "helpfulness": utility_share},
        }

    results = {"base": cases(0.9, 0.95, 0.0, 0.0, 0.9, 0.95), "sft": cases(0.05, 0.4, 0.1, 0.8, 0.85, 0.1)}
    rows = table_rows(results)
    assert rows["sft"]["ASR"] == pytest.approx(5.0) and rows["sft"]["ASR_what3"] == pytest.approx(40.0)
    assert rows["sft"]["RR_share1"] == pytest.approx(80.0) and rows["sft"]["utility_share1"] == pytest.approx(
        10.0
    )
    assert math.isnan(rows["sft"]["lenient_ASR_what3"])  # no lenient verdicts: shown as -, not 0
    report = write_report(results, tmp_path, labels={"sft": "Post-hoc SFT"}, baseline="base", seed=3)
    text = (tmp_path / "report.md").read_text()
    assert "| Post-hoc SFT | 5.0 | 40.0 | 5.0 | - | 10.0 | 80.0 | 85.0 | 10.0 |" in text
    assert "| Post-hoc SFT | what3_asr | 30 | 20.0 | 10.0 | 40.0 |" in text
    assert report["summary"]["sft/utility_drop"] == pytest.approx(5.0)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    del results["sft"]["share1_rr"]
    with pytest.raises(KeyError, match="share1_rr"):
        table_rows(results)
