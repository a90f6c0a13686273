"""mirage-report on hand-made run folders: the table's numbers, the CSV rows and the plots."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from mirage.report import main, make_report


def _case(asr, ir, rr, **extra):
    return {"ASR": asr, "IR": ir, "RR": rr, "n": 10, **extra}


@pytest.fixture()
def runs(tmp_path):
    for name, what3 in (("sft", 0.6), ("npo", 0.1)):
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(
            json.dumps(
                {
                    "plain_asr": _case(0.0, 0.1, 0.9),
                    "what3_asr": _case(0.3, 0.1, 0.6, kshot_ASR=what3),
                    "plain_rr": _case(0.9, 0.05, 0.05, helpfulness=0.9),
                    "share1_rr": _case(0.1, 0.0, 0.9, helpfulness=0.1),
                }
            )
        )
        hydra = run / ".hydra"
        hydra.mkdir()
        (hydra / "overrides.yaml").write_text(
            f"- experiment=mirage_eval_tiny\n- paths.cache_dir=/x\n- tag={name}\n"
        )
    train = tmp_path / "sweep" / "train" / "csv"
    train.mkdir(parents=True)
    with open(train / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "train/loss", "val/loss"])
        writer.writerows([[0, 3.0, ""], [1, 2.0, ""], [2, 1.5, 1.7]])
    return tmp_path / "sweep"


def test_report_lays_out_the_paper_table(runs, tmp_path):
    written = make_report([runs], tmp_path / "out")
    table = written["md"].read_text()
    # Labels come from the sweep overrides, without paths and without those every run shares
    # (experiment=...); K-shot ASR is the attacked ASR.
    assert "| tag=npo | 0.0 -> 10.0 | 5.0 -> 90.0 | 90.0 -> 10.0 | 30.0 / 10.0 / 60.0 |" in table
    assert "tag=sft | 0.0 -> 60.0" in table
    with open(written["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert {"run", "case", "metric", "value", "dir"} == set(rows[0])
    assert len([r for r in rows if r["metric"] == "ASR"]) == 8
    for key in ("png", "loss_png"):
        with Image.open(written[key]) as image:
            assert image.size[0] > 300 and image.size[1] > 200


def test_report_cli_with_labels_and_errors(runs, tmp_path, capsys):
    main([str(runs / "sft"), str(runs / "npo"), "--labels", "SFT,NPO", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert "| SFT | 0.0 -> 60.0" in out and "| NPO |" in out
    with pytest.raises(FileNotFoundError, match="no evaluation"):
        make_report([tmp_path / "o"], tmp_path / "o2")
