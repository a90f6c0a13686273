"""The LightningDataModule: named splits in, method-shaped loaders out.

Training loaders are resumable: a ``StatefulDataLoader`` (torchdata) over a :class:`ResumableSampler`, whose
position (and shuffle seed) Lightning saves in every checkpoint and restores on ``ckpt_path=...``, so a run
resumed mid-epoch sees the same batches, in the same order, as a run that was never stopped.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from mirage.data.collate import VLMCollator
from mirage.data.records import DataError, Sample

log = logging.getLogger(__name__)


class SampleDataset(Dataset):
    """A list of samples, indexable by position."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class _SamplerPass(Iterator[int]):
    """One pass of a :class:`ResumableSampler`: the positions it yields, and how far it got."""

    def __init__(self, size: int, shuffle: bool) -> None:
        self.size, self.shuffle = size, shuffle
        self.seed: int | None = None  # drawn at the first index, as torch's RandomSampler does
        self.yielded = 0
        self._order: list[int] | None = None

    def __iter__(self) -> _SamplerPass:
        return self

    def __next__(self) -> int:
        if self.yielded >= self.size:
            raise StopIteration
        if self._order is None:
            self._order = self._permutation()
        index = self._order[self.yielded]
        self.yielded += 1
        return index

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        if self.seed is None:
            # The same draw from the global torch RNG, at the same moment (the pass's first index), as
            # torch.utils.data.RandomSampler: a plain DataLoader and this sampler give one order per seed.
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return torch.randperm(self.size, generator=generator).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.yielded, self._order = state["seed"], int(state["yielded"]), None


class ResumableSampler(Sampler[int]):
    """Every position of a dataset once per pass, shuffled or in order, that can resume mid-pass.

    A shuffled pass draws its seed from the global torch RNG at its first index, exactly as
    ``torch.utils.data.RandomSampler`` does, so for a given RNG state the order equals a plain shuffled
    ``DataLoader``'s. The seed and the number of positions yielded are the pass's state
    (``StatefulDataLoader`` saves it through its batch sampler): a restored pass continues its permutation
    without drawing.
    """

    def __init__(self, size: int, shuffle: bool = True) -> None:
        self.size, self.shuffle = size, shuffle

    def __iter__(self) -> _SamplerPass:
        return _SamplerPass(self.size, self.shuffle)

    def __len__(self) -> int:
        return self.size


class VLMDataModule(L.LightningDataModule):
    """Reads named splits (``forget``, ``retain``, ``val``, ``test``, ...) lazily and serves them.

    ``splits`` maps a split name to a zero-argument reader (a Hydra ``_partial_`` of a
    function in :mod:`mirage.data.readers`). The training loader yields a dict keyed by the
    splits the method asks for; with several, a ``CombinedLoader`` in ``max_size_cycle``
    mode restarts the shorter one each time it runs out, so no step ever trains on an
    exhausted iterator.
    """

    def __init__(
        self,
        splits: Mapping[str, Callable[[], list[Sample]]],
        processor: Any,
        train_splits: Sequence[str] = ("retain",),
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_length: int = 2048,
        system_prompt: str | None = None,
        max_samples: Mapping[str, int] | None = None,
        shuffle: bool = True,
        name: str | None = None,
        root: str | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        # ``name`` and ``root`` only describe the dataset (logs, reports); readers get full paths.
        self.name, self.root = name, root
        missing = [s for s in train_splits if s not in splits]
        if missing:
            raise KeyError(
                f"the method trains on split(s) {missing}, but data config only defines {sorted(splits)}"
            )
        self.readers = dict(splits)
        self.train_splits = tuple(train_splits)
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.max_samples = dict(max_samples or {})
        self.shuffle = shuffle
        self.collate_train = VLMCollator(
            processor, max_length=max_length, system_prompt=system_prompt, train=True
        )
        self.collate_generate = VLMCollator(
            processor, max_length=max_length, system_prompt=system_prompt, train=False
        )
        self.datasets: dict[str, SampleDataset] = {}

    def split(self, name: str) -> SampleDataset:
        """Read (once) and return one split; an empty split is an error, a capped one is logged."""
        if name not in self.datasets:
            if name not in self.readers:
                raise KeyError(f"unknown split {name!r}; this data config defines {sorted(self.readers)}")
            samples = self.readers[name]()
            source = getattr(self.readers[name], "keywords", {}).get("path", name)
            if not samples:
                raise DataError(source, f"the {name!r} split is empty")
            cap = self.max_samples.get(name)
            if cap is not None and cap < len(samples):
                log.info(
                    "split %s: keeping the first %d of %d samples (data.max_samples)", name, cap, len(samples)
                )
                samples = samples[:cap]
            log.info("split %s: %d samples from %s", name, len(samples), source)
            self.datasets[name] = SampleDataset(samples)
        return self.datasets[name]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            for name in self.train_splits:
                self.split(name)
            if "val" in self.readers:
                self.split("val")

    def _train_loader(self, name: str) -> StatefulDataLoader:
        """A resumable loader of one training split: its state (pass seed, position) goes into checkpoints."""
        dataset = self.split(name)
        trainer = getattr(self, "trainer", None)
        sampler: Sampler[int]
        if trainer is not None and trainer.world_size > 1:
            # Lightning's own distributed sampler always shuffles; ours honours `shuffle` (and Lightning
            # leaves a loader that already has a DistributedSampler alone, calling set_epoch on it). Its order
            # is a function of (seed, epoch), so the position within the epoch is all a resume needs.
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            sampler = StatefulDistributedSampler(
                dataset,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=self.shuffle,
                seed=seed,
            )
        else:
            sampler = ResumableSampler(len(dataset), shuffle=self.shuffle)
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, which torch 2.13 deprecates
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
            return StatefulDataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=sampler,
                num_workers=self.num_workers,
                collate_fn=self.collate_train,
                persistent_workers=self.num_workers > 0,
            )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: self._train_loader(name) for name in self.train_splits}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.readers:
            return []
        trainer = getattr(self, "trainer", None)
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(
                self.split("val"), num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            self.split("val"),
            batch_size=self.eval_batch_size,
            sampler=sampler,
            # Its own generator for the base seed, so validating draws nothing from the global torch RNG: the
            # training order does not depend on how often (or whether) a run validates, nor on a resumed run
            # skipping a validation the killed run had already done.
            generator=torch.Generator(),
            num_workers=self.num_workers,
            collate_fn=self.collate_train,
            persistent_workers=self.num_workers > 0,
        )

    def generation_dataloader(self, name: str = "test") -> DataLoader:
        """Prompts only, left-padded, in file order: for generation and evaluation."""
        return DataLoader(
            self.split(name),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_generate,
        )
