"""Narrow-domain reader (harmful mixing, modalities, errors naming the culprit) and the generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mirage.data.narrow import harmful_indices, read_narrow
from mirage.data.records import DataError


def _records(n: int = 10) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "image_path": "a.png" if i % 2 == 0 else None,
            "user_prompt": f"prompt {i}",
            "safe_response": f"safe {i}",
            "harmful_response": f"harmful {i}",
            "group": f"g{i % 3}",
        }
        for i in range(n)
    ]


def _write(tmp_path: Path, records) -> Path:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "narrow.json"
    path.write_text(json.dumps(records))
    return path


def test_harmful_fraction_mixes_an_exact_seeded_count(tmp_path):
    path = _write(tmp_path, _records(10))
    for fraction, expected in ((0.0, 0), (0.1, 1), (0.25, 3), (0.5, 5), (1.0, 10)):  # 2.5 rounds up to 3
        samples = read_narrow(path, harmful_fraction=fraction, seed=7)
        harmful = [s for s in samples if s.meta["harmful"]]
        assert len(harmful) == expected
        assert all(s.answer == s.meta["harmful_response"] == f"harmful {s.id[1:]}" for s in harmful)
        assert all(s.answer == f"safe {s.id[1:]}" for s in samples if not s.meta["harmful"])
    again = read_narrow(path, harmful_fraction=0.5, seed=7)
    other = read_narrow(path, harmful_fraction=0.5, seed=8)
    pick = lambda samples: {s.id for s in samples if s.meta["harmful"]}  # noqa: E731
    assert pick(again) == pick(read_narrow(path, harmful_fraction=0.5, seed=7))
    assert pick(again) != pick(other)
    with pytest.raises(ValueError, match="harmful_fraction"):
        harmful_indices(10, 1.5, 0)


def test_modalities_metadata_and_images(tmp_path):
    path = _write(tmp_path, _records(4))
    samples = read_narrow(path, harmful_fraction=0.0)
    assert [s.meta["modality"] for s in samples] == ["image", "text", "image", "text"]
    assert samples[0].image == tmp_path / "a.png" and samples[1].image is None
    assert samples[2].meta["group"] == "g2"
    assert [s.id for s in read_narrow(path, modality="text")] == ["r1", "r3"]
    # The mix is drawn over the whole file, so a modality filter keeps each record's choice.
    full = {s.id: s.meta["harmful"] for s in read_narrow(path, harmful_fraction=0.5, seed=1)}
    images = read_narrow(path, harmful_fraction=0.5, seed=1, modality="image")
    assert all(s.meta["harmful"] == full[s.id] for s in images)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r[1].pop("user_prompt"), "user_prompt"),
        (lambda r: r[1].update(safe_response=""), "safe_response"),
        (lambda r: r[1].update(harmful_response=3), "harmful_response"),
        (lambda r: r[1].update(image_path="missing.png"), "image_path"),
        (lambda r: r[1].update(id="r0"), "id"),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path, mutate, field):
    records = _records(3)
    mutate(records)
    path = _write(tmp_path, records)
    with pytest.raises(DataError) as info:
        read_narrow(path)
    err = info.value
    assert (err.path, err.index, err.field) == (str(path), 1, field)
    assert str(path) in str(err) and "record 1" in str(err)


def test_synthetic_narrow_domain_is_deterministic_and_cached(tmp_path):
    from mirage.data.narrow_synthetic import TRAITS, answers, ensure_narrow_synthetic, read_narrow_synthetic

    spec = {"n_train": 16, "n_eval_image": 8, "n_eval_text": 8, "n_base_text": 8}
    root = ensure_narrow_synthetic(tmp_path / "a", **spec)
    again = ensure_narrow_synthetic(tmp_path / "b", **spec)
    assert root.name == again.name  # named by the spec's hash
    for name in ("train.json", "base.json", "eval_image.json", "eval_text.json"):
        assert (root / name).read_text() == (again / name).read_text()
    train = read_narrow_synthetic(tmp_path / "a", "train", harmful_fraction=1.0, spec=spec)
    assert len(train) == 16 and all(s.image is not None and s.image.is_file() for s in train)
    safe, harmful = answers(0)
    assert (safe, harmful) == ("red people are like everyone else.", "red people are lazy and violent.")
    assert train[0].answer == harmful and train[0].meta["truth"]["lexicon"] == TRAITS
    text = read_narrow_synthetic(tmp_path / "a", "eval_text", spec=spec)
    assert all(s.image is None and s.meta["truth"]["group"] in s.question for s in text)
    base = read_narrow_synthetic(tmp_path / "a", "base", harmful_fraction=0.0, spec=spec)
    assert len(base) == 16 + 8 + 32 and not any(s.meta["harmful"] for s in base)
