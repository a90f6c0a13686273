"""The datamodule: lazy splits, empty-split errors, and paired loaders that never run dry."""

from __future__ import annotations

import functools
import json

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
    # An empty file is an error at read time (tests/data/test_readers.py); here a filter keeps nothing.
    kept_none = tmp_path / "kept_none.json"
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]
    kept_none.write_text(json.dumps([{"id": "c", "conversations": turns}]))
    read = functools.partial(read_conversations, path=kept_none, where={"opener": "none"})
    dm = VLMDataModule({"retain": read}, processor)
    with pytest.raises(DataError, match=r"kept_none\.json: the 'retain' split is empty"):
        dm.setup("fit")


def test_max_samples_caps_a_split(processor):
    dm = VLMDataModule({"retain": lambda: _samples("r", 9)}, processor, max_samples={"retain": 4})
    assert len(dm.split("retain")) == 4


def _sample_ids(batches) -> list[list[str]]:
    """The sample ids of each batch, per split, from a CombinedLoader (``(batch, index, loader)`` items)."""
    return [{split: b["sample_ids"] for split, b in item[0].items()} for item in batches]


@pytest.mark.parametrize("splits", [("retain",), ("forget", "retain")])
def test_shuffled_order_equals_a_plain_dataloaders_for_the_same_seed(splits, processor):
    """The resumable loaders draw from the global RNG what torch's shuffled DataLoader draws, when it does:
    same seed, same batches, epoch after epoch (the embedded demo's numbers depend on it)."""
    import torch
    from lightning.pytorch.utilities import CombinedLoader
    from torch.utils.data import DataLoader

    sizes = {"forget": 10, "retain": 7}
    dm = VLMDataModule(
        {name: functools.partial(_samples, name[0], sizes[name]) for name in splits},
        processor,
        train_splits=splits,
        batch_size=3,
    )
    dm.setup("fit")

    def plain() -> CombinedLoader:
        loaders = {
            s: DataLoader(dm.split(s), batch_size=3, shuffle=True, collate_fn=dm.collate_train)
            for s in splits
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    orders, states = [], []
    for make in (dm.train_dataloader, plain):
        torch.manual_seed(0)
        orders.append([ids for _epoch in range(3) for ids in _sample_ids(iter(make()))])
        states.append(torch.get_rng_state())
    assert orders[0] == orders[1]
    assert torch.equal(states[0], states[1])  # and the same numbers were drawn, no more
    assert len({str(ids) for ids in orders[0]}) > len(orders[0]) // 2  # shuffled: epochs differ


def test_a_training_loader_resumes_mid_pass_without_drawing(processor):
    """A loader's state (Lightning saves it in checkpoints) continues the same pass in a new loader, and the
    restored pass replays its saved seed instead of drawing a new one from the global RNG."""
    import torch

    dm = VLMDataModule({"retain": lambda: _samples("r", 11)}, processor, batch_size=2)
    dm.setup("fit")
    torch.manual_seed(1)
    (loader,) = dm.train_dataloader().flattened
    iterator = iter(loader)
    first = [next(iterator)["sample_ids"] for _ in range(2)]
    state = loader.state_dict()
    rest = [b["sample_ids"] for b in iterator]

    (fresh,) = dm.train_dataloader().flattened
    fresh.load_state_dict(state)
    torch.manual_seed(2)  # another global RNG state: the restored pass must not depend on it
    assert [b["sample_ids"] for b in fresh] == rest
    assert sorted(i for ids in first + rest for i in ids) == sorted(f"r{i}" for i in range(11))


@pytest.mark.parametrize(("field", "value"), [("batch_size", 0), ("batch_size", -2), ("eval_batch_size", 0)])
def test_batch_sizes_must_be_positive(field, value, processor):
    with pytest.raises(ValueError, match=rf"data\.{field} must be a positive integer, got {value}"):
        VLMDataModule({"retain": lambda: _samples("r", 2)}, processor, **{field: value})


def test_a_distributed_training_loader_resumes_mid_epoch(processor):
    """Under DDP each rank's loader uses a stateful DistributedSampler (order from seed and epoch): its
    position comes back from its state, in the epoch Lightning sets."""
    from types import SimpleNamespace

    dm = VLMDataModule({"retain": lambda: _samples("r", 12)}, processor, batch_size=2)
    dm.setup("fit")
    seen = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what the loaders read of the Trainer
        (loader,) = dm.train_dataloader().flattened
        loader.sampler.set_epoch(1)  # as Lightning does at each epoch start
        iterator = iter(loader)
        first = next(iterator)["sample_ids"]
        state = loader.state_dict()
        rest = [b["sample_ids"] for b in iterator]
        (fresh,) = dm.train_dataloader().flattened
        fresh.sampler.set_epoch(1)
        fresh.load_state_dict(state)
        assert [b["sample_ids"] for b in fresh] == rest
        seen += [i for ids in [first, *rest] for i in ids]
    assert sorted(seen) == sorted(f"r{i}" for i in range(12))  # the ranks share the split between them
