"""One way to print a rate in every table: a fraction as a percentage, a missing rate as "-"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirage.evaluation.formatting import MISSING, percent


@pytest.mark.parametrize(
    ("fraction", "shown"),
    [(0.25, "25.0"), (1, "100.0"), (0, "0.0"), (2 / 3, "66.7"), (0.0004, "0.0"), (np.float32(0.5), "50.0")],
)
def test_a_fraction_is_shown_in_percent_with_one_decimal(fraction, shown):
    assert percent(fraction) == shown


def test_a_missing_rate_is_a_dash_and_a_non_number_an_error():
    assert percent(None) == percent(math.nan) == percent(np.float64("nan")) == MISSING == "-"
    for bad in ("0.5", True, [0.5]):
        with pytest.raises(TypeError, match="expected a fraction"):
            percent(bad)


def test_every_table_shows_a_rate_the_same_way(tmp_path):
    """mirage-report, mirage-eval's summary and the Table-1 report agree on measured and missing rates."""
    import io
    from contextlib import redirect_stdout

    from mirage.evaluation.mirage_table import write_report
    from mirage.evaluation.report import print_summary
    from mirage.report import markdown_table

    metrics = {"ASR": 0.125, "IR": 0.5, "RR": 0.375, "helpfulness": math.nan, "n": 8}
    rows = [{"run": "a", "case": "c", "metric": key, "value": value} for key, value in metrics.items()]
    assert "| a | c | 12.5 | 50.0 | 37.5 | - | - |" in markdown_table(rows)

    out = io.StringIO()
    with redirect_stdout(out):
        print_summary({"c": {**metrics, "attack": "none"}})
    (row,) = [line for line in out.getvalue().splitlines() if "│ c " in line]
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[4:9] == ["12.5", "50.0", "37.5", "-", "-"]

    cases = {case: dict(metrics) for case in ("plain_asr", "what3_asr", "plain_rr", "share1_rr")}
    with redirect_stdout(io.StringIO()):
        write_report({"m": cases}, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| m | plain_asr | 8 | 12.5 | 50.0 | 37.5 |" in text
    assert "| m | 12.5 | - | - | - | 37.5 | 37.5 | - | - |" in text  # no kshot or lenient rates: missing
