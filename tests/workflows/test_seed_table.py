"""The seed table (mirage/workflows/seed_table.py): planted pipeline reports of three seeds -> mean, sd and
range of every cell, the attacks' jumps, utility drop from the base, the curves' end and maximum; and
``mirage-pipeline -m ... seed=1,2`` writing it into the sweep folder by itself."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tests.cli import cli_command, run_cli

from mirage.workflows.seed_table import SeedTableCallback, write_seed_table


def _row(asr: float, what3: float, rr: float, share: float, utility: float) -> dict[str, float]:
    return {"ASR": asr, "ASR_what3": what3, "RR": rr, "RR_share1": share, "utility": utility}


def _run(root: Path, seed: int, sft: dict, base_utility: float, curve_end: float | None = None) -> None:
    run = root / str(seed)
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "report": {"baseline": "base", "labels": {"base": "Base", "sft": "SFT"}}}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    rows = {"base": _row(90, 92, 0, 0, base_utility), "sft": sft}
    (run / "report.json").write_text(json.dumps({"rows": rows, "summary": {}}))
    (run / "stages.json").write_text("{}")
    if curve_end is not None:
        summary = {"sft/curve_what3_asr_kshot_ASR_end": curve_end, "sft/curve_what3_asr_kshot_ASR_max": 0.6}
        (run / "curves.json").write_text(json.dumps({"curves": {}, "summary": summary}))


def test_seed_table_of_three_planted_seeds(tmp_path):
    _run(tmp_path, 1, _row(2, 40, 0, 100, 85), 88, curve_end=0.5)
    _run(tmp_path, 2, _row(6, 50, 10, 90, 80), 90, curve_end=0.4)
    _run(tmp_path, 3, _row(4, 30, 5, 95, 84), 86, curve_end=0.6)
    (tmp_path / "not_a_run").mkdir()  # other folders are ignored
    out = write_seed_table(tmp_path)
    assert out["seeds"] == [1, 2, 3]
    stats = out["stats"]["sft"]
    assert stats["ASR_jump"]["mean"] == pytest.approx(36.0)  # (38 + 44 + 26) / 3
    assert stats["ASR_jump"]["sd"] == pytest.approx(statistics.stdev([38, 44, 26]))
    assert (stats["ASR_jump"]["min"], stats["ASR_jump"]["max"]) == (26, 44)
    assert stats["RR_jump"]["mean"] == pytest.approx((100 + 80 + 90) / 3)
    assert stats["utility_drop"]["mean"] == pytest.approx((3 + 10 + 2) / 3)
    assert stats["curve_end"]["mean"] == pytest.approx(50.0) and stats["curve_max"]["max"] == pytest.approx(
        60.0
    )
    assert out["stats"]["base"]["utility_drop"]["max"] == 0
    assert "curve_end" not in out["stats"]["base"]  # the base recorded no curves
    table = (tmp_path / "seeds.md").read_text()
    assert "seeds 1, 2, 3" in table
    assert "| SFT | 4.0 ± 2.0 [2.0, 6.0] | 40.0 ± 10.0 [30.0, 50.0] |" in table
    assert (tmp_path / "seeds.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "seeds.json").read_text())["cells"]["sft"]["ASR"] == [2, 6, 4]


def test_the_callback_writes_nothing_without_pipeline_runs(tmp_path):
    SeedTableCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / "seeds.md").exists()


@pytest.mark.slow
def test_a_pipeline_multirun_over_seeds_writes_the_seed_table(tmp_path, cache_dir):
    args = [
        "-m",
        "experiment=mirage_demo",
        "seed=1,2",
        "data_root='${synthetic_data:"
        + f"{cache_dir}/datasets"
        + ",${seed},16,8,64,${world}}'",  # a world per seed
        'common_overrides=["trainer.max_steps=2","data.batch_size=4","callbacks.rich_progress_bar=null"]',
        *[f"stages.{name}=null" for name in ("mixed", "posthoc", "npo", "sam_npo", "rmu")],
        "evaluation.models=[base]",
        "audit=null",
        f"stage_cache_dir={tmp_path}/stages",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    run_cli(cli_command("mirage.pipeline", args, cache_dir), timeout=600)
    seeds = json.loads((tmp_path / "sweep" / "seeds.json").read_text())
    assert seeds["seeds"] == [1, 2] and list(seeds["cells"]) == ["base"]
    assert "| Base |" in (tmp_path / "sweep" / "seeds.md").read_text()
