"""`mirage-eval` end to end: the four paper cases on the tiny model, resume after a kill, cached judging."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.cli import ENV, REPO_ROOT, cli_command, run_cli

pytestmark = pytest.mark.slow


def eval_command(args: list[str], cache_dir: Path) -> list[str]:
    return cli_command("mirage.evaluate", args, cache_dir)


def run_eval(args: list[str], cache_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(eval_command(args, cache_dir), check=check)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mirage_eval_tiny_writes_the_four_cases(tmp_path, cache_dir, synthetic_dir):
    run_dir = tmp_path / "eval"
    run_eval(
        ["experiment=mirage_eval_tiny", "generation.max_new_tokens=8", f"hydra.run.dir={run_dir}"], cache_dir
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"plain_asr", "what3_asr", "plain_rr", "share1_rr"}
    n_unsafe = sum(1 for r in json.loads((synthetic_dir / "test.json").read_text()) if not r["safe"])
    n_safe = sum(1 for r in json.loads((synthetic_dir / "test.json").read_text()) if r["safe"])
    assert metrics["plain_asr"]["answers"] == n_unsafe and metrics["what3_asr"]["answers"] == 3 * n_unsafe
    assert metrics["plain_rr"]["answers"] == metrics["share1_rr"]["answers"] == n_safe
    for name, m in metrics.items():
        assert m["ASR"] + m["IR"] + m["RR"] == pytest.approx(1.0), name
        judged = _lines(run_dir / name / "judged.jsonl")
        assert len(judged) == m["answers"]
        assert {r["label"] for r in judged} <= {"refusal", "irrelevant", "relevant"}
        assert all("oracle" in r["verdicts"] for r in judged)
    assert set(metrics["what3_asr"]["per_shot_ASR"]) == {"0", "1", "2"}
    assert metrics["what3_asr"]["questions"] == n_unsafe
    what3 = _lines(run_dir / "what3_asr" / "generations.jsonl")
    assert all(r["question"].lower().startswith("what") and r["question"].endswith("?") for r in what3)
    share = _lines(run_dir / "share1_rr" / "generations.jsonl")
    assert all(r["question"].lower().startswith("share") for r in share)


def test_killed_eval_resumes_without_regenerating_or_rejudging(tmp_path, cache_dir):
    run_dir = tmp_path / "eval"
    args = [
        "experiment=mirage_eval_tiny",
        "cases.plain_asr=null",
        "cases.plain_rr=null",
        "cases.share1_rr=null",
        "generation.batch_size=1",
        "generation.max_new_tokens=24",
        f"hydra.run.dir={run_dir}",
        f"judge_cache_dir={tmp_path / 'verdicts'}",
    ]
    proc = subprocess.Popen(
        eval_command(args, cache_dir),
        cwd=REPO_ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    generations = run_dir / "what3_asr" / "generations.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if generations.is_file() and len(generations.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the evaluation finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(_lines(generations))
    assert before >= 5
    result = run_eval(args, cache_dir)
    assert f"({before} already on disk" in result.stdout + result.stderr
    records = _lines(generations)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys))  # nothing generated twice
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(keys) == metrics["what3_asr"]["answers"]
    cache_files = list((tmp_path / "verdicts").glob("*.jsonl"))
    sizes = {p: p.stat().st_size for p in cache_files}
    run_eval(args, cache_dir)  # a third run: everything on disk, every verdict cached
    assert {p: p.stat().st_size for p in cache_files} == sizes
    assert json.loads((run_dir / "metrics.json").read_text())["what3_asr"] == metrics["what3_asr"]


def test_eval_logs_metrics_and_answer_table_to_wandb_offline(tmp_path, cache_dir):
    run_dir = tmp_path / "eval"
    run_eval(
        [
            "experiment=mirage_eval_tiny",
            "cases.what3_asr=null",
            "cases.share1_rr=null",
            "cases.plain_rr=null",
            "generation.max_new_tokens=4",
            "logger=wandb",
            f"hydra.run.dir={run_dir}",
        ],
        cache_dir,
    )
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    blob = b"".join(p.read_bytes() for p in offline[0].rglob("*.wandb"))
    assert b"eval/plain_asr/ASR" in blob and b"eval/plain_asr/answers" in blob  # scalars and the answer table
