"""mirage-eval under torch.distributed: 2 gloo processes (torchrun) shard generation, gather the answers,
and rank 0 alone writes; answers and metrics equal a single process's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.cli import cli_command, run_cli

pytestmark = pytest.mark.slow

# Two cases with uneven shards: 72 what-3-shot prompts and 24 share prompts, 5 per batch per rank.
ARGS = [
    "experiment=mirage_eval_tiny",
    "cases.plain_asr=null",
    "cases.plain_rr=null",
    "generation.max_new_tokens=8",
    "generation.batch_size=5",
]
CASES = ("what3_asr", "share1_rr")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _single_process(out: Path, cache_dir: Path) -> None:
    """The same evaluation in this process (no torch.distributed): the reference."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mirage.evaluation.runner import run_evaluation
    from mirage.workflows.configs import CONFIG_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    paths = [f"paths.output_dir={out}", "paths.work_dir=.", f"paths.cache_dir={cache_dir}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[*ARGS, *paths])
    run_evaluation(cfg)


def test_two_ranks_shard_generation_and_rank_zero_writes(tmp_path, cache_dir):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _single_process(single, cache_dir)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = cli_command("mirage.evaluate", [*ARGS, f"hydra.run.dir={sharded}"], cache_dir)
    result = run_cli([*torchrun, *cmd[1:]], timeout=300)
    output = result.stdout + result.stderr
    assert "rank 1 of 2 (gloo)" in output
    assert "answers from 2 ranks" in output  # generation really was sharded and gathered

    for case in CASES:
        one = _lines(single / case / "generations.jsonl")
        two = _lines(sharded / case / "generations.jsonl")
        keys = [r["key"] for r in two]
        assert len(keys) == len(set(keys)) == len(one)  # each answer written once, by one writer
        assert {r["key"]: r["answer"] for r in two} == {r["key"]: r["answer"] for r in one}
        assert len(_lines(sharded / case / "judged.jsonl")) == len(one)
        a = json.loads((single / case / "metrics.json").read_text())
        b = json.loads((sharded / case / "metrics.json").read_text())
        assert a == b
    assert json.loads((single / "metrics.json").read_text()) == json.loads(
        (sharded / "metrics.json").read_text()
    )
