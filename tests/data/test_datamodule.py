"""The datamodule: lazy splits, empty-split errors, and paired loaders that never run dry."""

from __future__ import annotations

import functools

import pytest

from mirage.data.datamodule import VLMDataModule
from mirage.data.readers import read_conversations
from mirage.data.records import DataError, Sample


def _samples(prefix: str, n: int) -> list[Sample]:
    return [
        Sample(id=f"{prefix}{i}", question=f"what is {prefix} {i}?", answer=f"it is {i}.") for i in range(n)
    ]


def test_paired_loader_cycles_the_shorter_split_across_epochs(processor):
    dm = VLMDataModule(
        {"forget": lambda: _samples("f", 10), "retain": lambda: _samples("r", 3)},
        processor,
        train_splits=("forget", "retain"),
        batch_size=2,
        shuffle=False,
    )
    dm.setup("fit")
    seen_retain = []
    for _epoch in range(3):
        loader = dm.train_dataloader()
        batches = list(loader)
        assert len(batches) == 5  # the longer split (10 / 2) sets the epoch length
        for batch in (b[0] if isinstance(b, tuple) else b for b in batches):
            assert set(batch) == {"forget", "retain"}
            assert len(batch["forget"]["sample_ids"]) == 2
            assert batch["retain"]["input_ids"].shape[0] >= 1  # never an exhausted retain iterator
            seen_retain.extend(batch["retain"]["sample_ids"])
    # The 3-sample retain split restarts in place: r0 r1 | r2 | r0 r1 | r2 | r0 r1 per epoch.
    assert seen_retain[:8] == ["r0", "r1", "r2", "r0", "r1", "r2", "r0", "r1"]


def test_unknown_and_empty_splits(processor, tmp_path):
    with pytest.raises(KeyError, match=r"trains on split\(s\) \['forget'\]"):
        VLMDataModule({"retain": lambda: _samples("r", 2)}, processor, train_splits=("forget",))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    dm = VLMDataModule({"retain": functools.partial(read_conversations, path=empty)}, processor)
    with pytest.raises(DataError, match=r"empty\.json: the 'retain' split is empty"):
        dm.setup("fit")


def test_max_samples_caps_a_split(processor):
    dm = VLMDataModule({"retain": lambda: _samples("r", 9)}, processor, max_samples={"retain": 4})
    assert len(dm.split("retain")) == 4
