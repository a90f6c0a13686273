"""Safety curves (train.yaml's ``curves:``, mirage/evaluation/curves.py) end to end: the four paper cases
logged to the CSV logger at step 0, every N steps and at the end; the last point equal, answer for answer,
to ``mirage-eval`` on the exported model and the same subset; training bit-identical with or without
curves; and the same under 2-process CPU DDP (torchrun), where rank 0 alone writes."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tests.cli import cli_command, run_cli

pytestmark = pytest.mark.slow

CASES = ("plain_asr", "what3_asr", "plain_rr", "share1_rr")
QUESTIONS = 6  # per case
TRAIN = ["experiment=sft_tiny", "trainer.max_steps=5", "logger=csv", "callbacks.rich_progress_bar=null"]
CURVES = [
    "curves.experiment=mirage_eval_tiny",
    "curves.every_n_steps=2",
    f"curves.max_questions={QUESTIONS}",
    "curves.overrides=['generation.max_new_tokens=8']",
]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train(run_dir: Path, cache_dir: Path, args: list[str], torchrun: bool = False) -> str:
    cmd = cli_command("mirage.train", [*TRAIN, *args, f"hydra.run.dir={run_dir}"], cache_dir)
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        cmd = [*launcher, *cmd[1:]]
    result = run_cli(cmd, timeout=400)
    return result.stdout + result.stderr


def _mirage_eval(out: Path, hf_dir: Path, cache_dir: Path) -> None:
    args = [
        "experiment=mirage_eval_tiny",
        "model=checkpoint",
        f"model.name_or_path={hf_dir}",
        f"benchmark.max_questions={QUESTIONS}",
        "generation.max_new_tokens=8",
        f"hydra.run.dir={out}",
    ]
    run_cli(cli_command("mirage.evaluate", args, cache_dir), timeout=300)


def _check_last_point_equals_mirage_eval(run_dir: Path, eval_dir: Path) -> None:
    """The curve's final point was taken on the weights that were exported: mirage-eval of the export, on
    the same subset, gives the same answers, labels and metrics."""
    points = _jsonl(run_dir / "curves.jsonl")
    last = points[-1]
    answers = [r for r in _jsonl(run_dir / "curves_answers.jsonl") if r["step"] == last["step"]]
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    for case in CASES:
        mine = {r["key"]: (r["answer"], r["label"]) for r in answers if r["case"] == case}
        theirs = {r["key"]: (r["answer"], r["label"]) for r in _jsonl(eval_dir / case / "judged.jsonl")}
        assert mine == theirs, case
        for metric in ("ASR", "RR", "IR", "kshot_ASR", "n", "questions"):
            assert last["metrics"][f"curves/{case}/{metric}"] == pytest.approx(evaluated[case][metric]), (
                metric
            )
    assert evaluated["what3_asr"]["n"] == 3 * QUESTIONS  # the subset: 6 questions, 3 rewrites each


def test_curves_log_to_csv_equal_mirage_eval_and_leave_training_unchanged(tmp_path, cache_dir, synthetic_dir):
    with_curves, without = tmp_path / "curves", tmp_path / "plain"
    output = _train(with_curves, cache_dir, CURVES)
    assert "safety curves took" in output and "curves at step 4" in output

    points = _jsonl(with_curves / "curves.jsonl")
    assert [p["step"] for p in points] == [0, 2, 4, 5]  # step 0, every 2, and the last step
    with open(with_curves / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for case, metric in [("plain_asr", "ASR"), ("what3_asr", "kshot_ASR"), ("plain_rr", "RR")]:
        column = f"curves/{case}/{metric}"
        logged = {int(r["step"]): float(r[column]) for r in rows if r.get(column)}
        assert logged == {p["step"]: p["metrics"][column] for p in points}, column
    helpfulness = [r for r in rows if r.get("curves/share1_rr/RR") and r.get("curves/plain_rr/helpfulness")]
    assert len(helpfulness) == 4
    assert any(r.get("curves/cost_fraction") for r in rows)
    answers = _jsonl(with_curves / "curves_answers.jsonl")
    assert len(answers) == 4 * (QUESTIONS * (1 + 3 + 1 + 1))  # 4 points x (plain, What-3, plain, Share-1)

    eval_dir = tmp_path / "eval"
    _mirage_eval(eval_dir, with_curves / "hf", cache_dir)
    _check_last_point_equals_mirage_eval(with_curves, eval_dir)

    # Evaluating during training leaves every random state and mode as it was: the same weights, bit for bit.
    _train(without, cache_dir, [])
    assert not (without / "curves.jsonl").exists()
    a, b = (
        load_file(with_curves / "hf" / "model.safetensors"),
        load_file(without / "hf" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    tables = [(d / "csv" / "metrics.csv").read_text().splitlines() for d in (with_curves, without)]
    rows = [csv.DictReader(table) for table in tables]
    losses = [[r["train/loss"] for r in table if r.get("train/loss")] for table in rows]
    assert losses[0] == losses[1] and len(losses[0]) == 5


def test_curves_under_two_process_ddp(tmp_path, cache_dir, synthetic_dir):
    run_dir = tmp_path / "ddp"
    ddp = ["trainer=ddp_cpu", "trainer.strategy=ddp", "data.batch_size=4"]  # torchrun starts the ranks
    output = _train(run_dir, cache_dir, [*CURVES, *ddp], torchrun=True)
    assert "shared by 2 rank(s)" in output  # the prompts really were dealt to both ranks
    points = _jsonl(run_dir / "curves.jsonl")
    assert [p["step"] for p in points] == [0, 2, 4, 5]  # rank 0 alone writes: one line a point
    answers = _jsonl(run_dir / "curves_answers.jsonl")
    keys = [(r["step"], r["case"], r["key"]) for r in answers]
    assert len(keys) == len(set(keys)) == 4 * QUESTIONS * 6  # every prompt answered once, by one rank
    eval_dir = tmp_path / "eval"
    _mirage_eval(eval_dir, run_dir / "hf", cache_dir)
    _check_last_point_equals_mirage_eval(run_dir, eval_dir)
