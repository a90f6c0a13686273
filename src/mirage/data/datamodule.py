"""The LightningDataModule: named splits in, method-shaped loaders out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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
        self.eval_batch_size = eval_batch_size or batch_size
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

    def _loader(self, name: str, shuffle: bool, train: bool) -> DataLoader:
        dataset = self.split(name)
        sampler = None
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Lightning's own distributed sampler always shuffles; ours honours `shuffle` (and Lightning
            # leaves a loader that already has a DistributedSampler alone, calling set_epoch on it).
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            sampler = DistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=shuffle, seed=seed
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_train,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: self._loader(name, self.shuffle, train=True) for name in self.train_splits}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False, train=False) if "val" in self.readers else []

    def generation_dataloader(self, name: str = "test") -> DataLoader:
        """Prompts only, left-padded, in file order: for generation and evaluation."""
        return DataLoader(
            self.split(name),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_generate,
        )
