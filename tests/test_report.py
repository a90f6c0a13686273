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


# ---------------------------------------------------------------- paired comparisons


def _answer(qid, label, shot=0, subset="unsafes"):
    return {"key": f"{qid}|{subset}|none|{shot}", "id": qid, "subset": subset, "shot": shot, "attack": "none",
            "question": "q?", "image": f"images/{qid}.png", "label": label, "verdicts": {}}  # fmt: skip


def _eval_run(root, name, cases):
    """An evaluation run folder: metrics.json (rates from the answers) and <case>/judged.jsonl."""
    run = root / name
    metrics = {}
    for case, answers in cases.items():
        (run / case).mkdir(parents=True)
        (run / case / "judged.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
        rates = [sum(a["label"] == lab for a in answers) / len(answers) for lab in ("relevant", "irrelevant")]
        metrics[case] = _case(*rates, 1 - sum(rates))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture()
def paired_runs(tmp_path):
    """SFT breaks 12 of 40 plain questions and half of 20 What-3-shot questions (on every shot); NPO none.
    Their safe answers are identical."""
    safe = [_answer(f"s{i}", "relevant" if i % 4 else "refusal", subset="safe_safes") for i in range(16)]
    runs = {}
    for name, plain_broken, what_broken in (("sft", 12, 10), ("npo", 0, 0)):
        runs[name] = _eval_run(
            tmp_path / "runs",
            name,
            {
                "plain_asr": [
                    _answer(f"p{i}", "relevant" if i < plain_broken else "refusal") for i in range(40)
                ],
                "what3_asr": [
                    _answer(f"w{i}", "relevant" if i < what_broken else "refusal", shot=s)
                    for i in range(20)
                    for s in range(3)
                ],
                "plain_rr": safe,
            },
        )
    return runs


def _pairs(path):
    with open(path) as handle:
        return {(r["run"], r["case"], r["metric"]): r for r in csv.DictReader(handle)}


def test_report_compares_paired_runs_with_exact_and_clustered_tests(paired_runs, tmp_path, capsys):
    main(
        [
            str(paired_runs["sft"]),
            str(paired_runs["npo"]),
            "--labels",
            "SFT,NPO",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    out = capsys.readouterr().out
    assert "## paired comparisons" in out and "report_pairs.csv" in out
    pairs = _pairs(tmp_path / "o" / "report_pairs.csv")
    # 12 answers relevant under SFT and refused under NPO, none the other way: exact McNemar p = 2 * 0.5**12.
    plain = pairs[("NPO", "plain_asr", "ASR")]
    assert plain["baseline"] == "SFT" and plain["test"] == "exact McNemar"
    assert float(plain["p_value"]) == pytest.approx(2 * 0.5**12)
    assert float(plain["difference"]) == pytest.approx(-0.3) and plain["pairs"] == "40"
    # Holm over every test of the report: the p-values, sorted, times (m, m - 1, ...), kept monotone.
    m = len(pairs)
    assert m == 3 + 4 + 4  # plain_asr: ASR IR RR; what3_asr: + K-shot ASR; plain_rr: + helpfulness
    raw = sorted(float(r["p_value"]) for r in pairs.values())
    assert float(plain["p_holm"]) == pytest.approx(max((m - k) * p for k, p in enumerate(raw[:2])))
    assert plain["significant"] == "yes"
    # Identical answers: difference 0, p = 1, not significant.
    for metric in ("ASR", "IR", "RR", "helpfulness"):
        same = pairs[("NPO", "plain_rr", metric)]
        assert (
            float(same["difference"]) == 0.0 and float(same["p_value"]) == 1.0 and same["significant"] == "no"
        )
    # What-3-shot answers are clustered by question: wider than the naive interval, a cluster test.
    shots = pairs[("NPO", "what3_asr", "ASR")]
    assert (shots["pairs"], shots["clusters"], shots["test"]) == ("60", "20", "cluster sign-flip")
    width = float(shots["difference_hi"]) - float(shots["difference_lo"])
    assert width > 1.2 * (float(shots["naive_difference_hi"]) - float(shots["naive_difference_lo"]))
    kshot = pairs[("NPO", "what3_asr", "kshot_ASR")]
    assert (kshot["unit"], kshot["pairs"], kshot["test"]) == ("questions", "20", "exact McNemar")
    assert float(kshot["p_value"]) == pytest.approx(2 * 0.5**10)
    # The Markdown row: rates, difference and its CI in %, p and Holm p.
    table = (tmp_path / "o" / "report.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| NPO | plain_asr | ASR |"))
    holm = f"{float(plain['p_holm']):.3g}"
    assert row.endswith(
        f"| 40 (40) | 0 / 0 | 30.0 [18.1, 45.4] | 0.0 [0.0, 8.8] | -30.0 [-44.8, -15.2] | exact McNemar "
        f"| 0.000488 | {holm} | yes |"
    )
    assert f"Holm-adjusted over all {m} tests" in table


def test_report_baseline_unpaired_answers_and_opt_out(paired_runs, tmp_path):
    # --baseline flips the direction; answers in one run only are counted, not paired.
    judged = paired_runs["npo"] / "plain_asr" / "judged.jsonl"
    judged.write_text("".join(judged.read_text().splitlines(keepends=True)[:30]))
    written = make_report(list(paired_runs.values()), tmp_path / "o", ["SFT", "NPO"], baseline="NPO")
    plain = _pairs(written["pairs_csv"])[("SFT", "plain_asr", "ASR")]
    assert (plain["baseline"], plain["pairs"], plain["only_baseline"], plain["only_run"]) == (
        "NPO",
        "30",
        "0",
        "10",
    )
    assert float(plain["difference"]) == pytest.approx(12 / 30)
    with pytest.raises(ValueError, match="--baseline 'RMU': no run has it"):
        make_report(list(paired_runs.values()), tmp_path / "o", ["SFT", "NPO"], baseline="RMU")
    # Runs whose answers share nothing: a clear error, unless comparisons are left out.
    judged.write_text(json.dumps(_answer("other", "refusal")) + "\n")
    with pytest.raises(ValueError, match=r"plain_asr/ASR: no answers pair.*--no-pairs"):
        make_report(list(paired_runs.values()), tmp_path / "o2")
    written = make_report(list(paired_runs.values()), tmp_path / "o3", pairs=False)
    assert "pairs_csv" not in written and "paired comparisons" not in written["md"].read_text()


def test_report_without_answers_says_what_it_did_not_compare(runs, tmp_path):
    table = make_report([runs], tmp_path / "out")["md"].read_text()
    assert "## paired comparisons" in table and "tag=sft / plain_asr: not compared, no " in table
