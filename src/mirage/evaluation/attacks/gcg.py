"""A universal adversarial text suffix (GCG, Zou et al. 2023, arXiv 2307.15043), appended to every question.

One suffix of ``suffix_length`` tokens per model is found by greedy coordinate gradient search
(:mod:`mirage.evaluation.attacks.gcg_search`) to make the target answers of a small corpus of harmful
questions likely, each question asked with its image and the suffix (Zou et al.'s multi-prompt, universal
version). The targets are the corpus' own answers (e.g. the forget split's harmful answers), or one
affirmative ``target`` for every question ("Sure, here is"). The attack then appends the suffix to every
question it is applied to, verbatim (the optimised suffix starts with its own space); a ``suffix`` given in
the config is used as it is, with no model and no search.

The result (``suffix.txt``: the suffix exactly, ``result.json``: settings, prompts, the loss at start, best,
re-measured from the text (``loss_saved``) and per step, seconds) goes into ``<cache_dir>/gcg-<key>/``, keyed
by the model directory's files, every setting and the corpus (:mod:`mirage.evaluation.attacks.pgd_cache`),
and is reused when present.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mirage.data.readers import read_conversations
from mirage.data.records import DataError, Sample
from mirage.evaluation.attacks.base import Attack
from mirage.evaluation.attacks.pgd_cache import model_fingerprint, read_result, write_result
from mirage.utils.hashing import stable_hash

log = logging.getLogger(__name__)

VERSION = 1  # of the search: part of the cache key, raised when what it computes changes
SUFFIX = "suffix.txt"
DEVICES = ("auto", "cpu", "cuda")
REQUIRED = {
    "model_dir": "the model whose gradients shape the suffix (default: model.name_or_path, model=checkpoint)",
    "corpus_file": "the harmful questions with images and answers, e.g. <data root>/forget.json",
    "cache_dir": "where the suffix is kept",
}


def read_corpus(
    path: str | Path, count: int | None = None, seed: int = 0, target: str | None = None
) -> list[Sample]:
    """The records of a LLaVA conversation file (question, image, answer), ``count`` of them drawn with
    ``seed`` (file order kept); every answer replaced by ``target`` when given."""
    samples = read_conversations(path)
    if not samples:
        raise DataError(path, "no records to optimise a suffix on")
    if count is not None and count < len(samples):
        keep = set(random.Random(seed).sample(range(len(samples)), count))
        samples = [s for i, s in enumerate(samples) if i in keep]
    return [Sample(s.id, s.question, s.answer if target is None else target, s.image) for s in samples]


class GCGAttack(Attack):
    """Every question followed by ``suffix``, or by the universal suffix of ``model_dir`` (searched once,
    then cached)."""

    name = "gcg"

    def __init__(
        self,
        suffix: str | None = None,
        model_dir: str | Path | None = None,
        corpus_file: str | Path | None = None,
        cache_dir: str | Path | None = None,
        target: str | None = None,
        num_prompts: int | None = 8,
        suffix_length: int = 20,
        init: str | None = None,
        steps: int = 100,
        topk: int = 256,
        search_width: int = 128,
        batch_size: int = 64,
        allow_non_ascii: bool = False,
        seed: int = 0,
        dtype: str = "float32",
        device: str = "auto",
    ) -> None:
        if suffix is not None and not str(suffix).strip():
            raise ValueError("gcg: a given suffix must have text; null searches for one")
        self.given = None if suffix is None else str(suffix)
        if self.given is None:
            given = {"model_dir": model_dir, "corpus_file": corpus_file, "cache_dir": cache_dir}
            for key, value in given.items():
                if value is None or not str(value):
                    raise ValueError(f"gcg: set attack.{key}: {REQUIRED[key]} (or attack.suffix)")
        for key, value in {
            "suffix_length": suffix_length, "steps": steps, "topk": topk,
            "search_width": search_width, "batch_size": batch_size,
        }.items():  # fmt: skip
            low = 0 if key == "steps" else 1
            if int(value) != value or int(value) < low:
                raise ValueError(f"gcg: {key} must be a whole number >= {low}, got {value}")
        if num_prompts is not None and int(num_prompts) < 1:
            raise ValueError(f"gcg: num_prompts must be positive or null (all), got {num_prompts}")
        if target is not None and not str(target).strip():
            raise ValueError("gcg: target must have text, or be null (each record's answer)")
        if device not in DEVICES:
            raise ValueError(f"gcg: device must be one of {DEVICES}, got {device!r}")
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.corpus_file = None if corpus_file is None else Path(corpus_file)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        length = int(suffix_length)
        self.settings = {
            "target": None if target is None else str(target),
            "num_prompts": None if num_prompts is None else int(num_prompts),
            "suffix_length": length,
            "init": " " + " ".join(["!"] * length) if init is None else str(init),  # Zou et al.'s "! ! ! ..."
            "steps": int(steps),
            "topk": int(topk),
            "search_width": int(search_width),
            "batch_size": int(batch_size),
            "allow_non_ascii": bool(allow_non_ascii),
            "seed": int(seed),
            "dtype": str(dtype),
        }
        self.device = device
        self.computed = False  # whether this instance ran the search (False: given, or the cache served it)
        self._result: dict[str, Any] | None = None
        self._text: str | None = self.given

    def corpus(self) -> list[Sample]:
        settings = self.settings
        return read_corpus(self.corpus_file, settings["num_prompts"], settings["seed"], settings["target"])

    def key(self) -> str:
        """Everything the suffix depends on: the model's files, the settings, the prompts and their images."""
        prompts = [
            [s.id, s.question, s.answer, model_fingerprint(s.image) if s.image else None]
            for s in self.corpus()
        ]
        model = model_fingerprint(self.model_dir)
        return stable_hash(
            {"version": VERSION, "model": model, "settings": self.settings, "corpus": prompts}
        )[:16]

    def result(self) -> dict[str, Any]:
        """``result.json`` of this attack's search (``suffix_file`` is the path of ``suffix.txt``)."""
        if self.given is not None:
            raise ValueError("gcg: the suffix was given (attack.suffix); there is no search result")
        if self._result is None:
            folder = self.cache_dir / f"gcg-{self.key()}"
            self._result = read_result(folder, SUFFIX, "suffix_file")
            if self._result is None:
                self._result = write_result(folder, self._build, SUFFIX, "suffix_file")
                self.computed = True
        return self._result

    def suffix(self) -> str:
        """The text appended to every question (read once)."""
        if self._text is None:
            self._text = Path(self.result()["suffix_file"]).read_text(encoding="utf-8")
        return self._text

    def _build(self, folder: Path) -> dict[str, Any]:
        from mirage.evaluation.attacks.gcg_frames import SuffixFrames
        from mirage.evaluation.attacks.gcg_search import search, text_loss
        from mirage.models.loading import load_vlm

        settings, started = self.settings, time.perf_counter()
        samples = self.corpus()
        model, processor = load_vlm(self.model_dir, dtype=settings["dtype"])
        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval().requires_grad_(False)  # gradients reach the suffix's embeddings only
        size = settings["batch_size"]
        frames = SuffixFrames(
            processor, samples, settings["init"], settings["suffix_length"], size, settings["allow_non_ascii"]
        )
        run = search(
            model, frames, steps=settings["steps"], topk=settings["topk"],
            search_width=settings["search_width"], batch_size=size, seed=settings["seed"],
        )  # fmt: skip
        (folder / SUFFIX).write_text(run["suffix"], encoding="utf-8")  # exactly the text, no newline
        result = {
            "settings": settings,
            "model_dir": str(self.model_dir),
            "corpus_file": str(self.corpus_file),
            "prompts": [{"id": s.id, "question": s.question, "target": s.answer} for s in samples],
            "device": device,
            "init": frames.init_text,
            **run,
            "loss_saved": text_loss(model, processor, frames, run["suffix"], size),
            "seconds": time.perf_counter() - started,
        }
        log.info(
            "gcg: target loss %.4f -> %.4f (from the text: %.4f) in %d steps, %.1f s, suffix %r, into %s",
            *(result["loss_start"], result["loss_best"], result["loss_saved"], settings["steps"]),
            *(result["seconds"], run["suffix"], folder),
        )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        return result

    def apply(self, samples: Sequence[Sample]) -> list[Sample]:
        self.suffix()  # once, before any sample (the model loads only when the cache lacks it)
        return super().apply(samples)

    def rewrite(self, sample: Sample) -> list[Sample]:
        text = self.suffix()
        new = self.variant(sample, question=sample.question + text, shot=sample.meta.get("shot", 0))
        new.meta["suffix"] = text
        return [new]
