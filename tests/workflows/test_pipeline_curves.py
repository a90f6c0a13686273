"""The report's safety curves (mirage/workflows/pipeline_curves.py) on planted curves.jsonl files: the end of
each curve against its maximum, a resumed run's repeated point, the section and the plot."""

from __future__ import annotations

import json
from pathlib import Path

from mirage.workflows.pipeline_curves import curves_summary, read_curves, write_curves


def _write(stage_dir: Path, points: list[tuple[int, float, float]]) -> None:
    """(step, What-3-shot ASR, Share RR) points, written as the callback writes them."""
    stage_dir.mkdir(parents=True)
    lines = []
    for step, asr, rr in points:
        metrics = {
            "curves/what3_asr/kshot_ASR": asr,
            "curves/share1_rr/RR": rr,
            "curves/plain_rr/helpfulness": 0.9,
        }
        lines.append(json.dumps({"step": step, "seconds": 1.0, "metrics": metrics}))
    (stage_dir / "curves.jsonl").write_text("\n".join(lines) + "\n")


def test_a_decaying_mirage_shows_as_an_end_below_the_maximum(tmp_path):
    # SFT: the mirage forms (0.5 at step 20) and decays (0.0 at step 40); a resume repeated step 20.
    _write(tmp_path / "sft", [(0, 0.9, 0.0), (10, 0.3, 0.6), (20, 0.4, 1.0), (20, 0.5, 1.0), (40, 0.0, 1.0)])
    _write(tmp_path / "npo", [(0, 0.9, 0.0), (10, 0.2, 0.0), (15, 0.0, 0.0)])
    curves = {"sft": read_curves(tmp_path / "sft"), "npo": read_curves(tmp_path / "npo")}
    assert curves["sft"]["what3_asr/kshot_ASR"] == [(0, 0.9), (10, 0.3), (20, 0.5), (40, 0.0)]
    summary = curves_summary(curves)
    assert summary["sft/curve_what3_asr_kshot_ASR_end"] == 0.0
    assert (
        summary["sft/curve_what3_asr_kshot_ASR_start"] == 0.9
    )  # the starting model, before the stage trained
    assert summary["sft/curve_what3_asr_kshot_ASR_max"] == 0.5  # the most the mirage reached in training
    assert summary["sft/curve_what3_asr_kshot_ASR_max_step"] == 20.0
    assert summary["sft/curve_share1_rr_RR_max_step"] == 20.0  # the earliest step at the maximum
    assert summary["npo/curve_what3_asr_kshot_ASR_end"] == 0.0
    assert "sft/curve_plain_asr_ASR_end" not in summary  # a case the curves did not ask

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.md").write_text("# table\n")
    dirs = {"base": tmp_path / "base", "sft": tmp_path / "sft", "npo": tmp_path / "npo"}
    out = write_curves(dirs, ["base", "sft", "npo"], {"sft": "Mixed SFT"}, tmp_path / "run")
    assert out == summary  # the base stage has no curves and is left out
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith("# table\n")
    row = next(line for line in report.splitlines() if line.startswith("| Mixed SFT |"))
    cells = ["90.0 -> 0.0 (50.0, 20)", "0.0 -> 100.0 (100.0, 20)", "-", "90.0 -> 90.0 (90.0, 10)"]
    assert row == "| Mixed SFT | 40 | " + " | ".join(cells) + " |"
    assert "| npo | 15 |" in report
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "run" / "curves.json").read_text())["summary"] == summary


def test_no_curves_no_section(tmp_path):
    (tmp_path / "report.md").write_text("# table\n")
    assert write_curves({"base": tmp_path / "missing"}, ["base"], {}, tmp_path) == {}
    assert (tmp_path / "report.md").read_text() == "# table\n"
    assert not (tmp_path / "curves.png").exists()
