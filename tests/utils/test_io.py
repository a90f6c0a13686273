"""Result files are strict JSON: a NaN metric is written as null, never as a bare NaN."""

from __future__ import annotations

import json

import pytest

from mirage.utils.io import write_json


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_everywhere(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(
        path, {"loss": float("nan"), "ci": [0.1, float("inf")], "case": {"ASR": -float("inf"), "n": 3}}
    )
    assert _strict(path.read_text()) == {"loss": None, "ci": [0.1, None], "case": {"ASR": None, "n": 3}}
    assert not path.with_suffix(".json.tmp").exists()  # written atomically


def test_the_strict_reader_would_catch_a_bare_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        _strict(json.dumps({"loss": float("nan")}))
