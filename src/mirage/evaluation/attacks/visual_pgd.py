"""A universal visual adversarial image (Qi et al. 2023, arXiv 2306.13213), paired with every question.

One image per model is optimised by projected gradient descent under an L-infinity budget to make a small
corpus of harmful target answers likely, given a neutral prompt (:mod:`mirage.evaluation.attacks.pgd`); the
attack then shows it instead of every sample's image (the question is unchanged). The gradient flows through
the processor's own pipeline (:class:`~mirage.evaluation.attacks.pixel_layout.PixelLayout`); the rest of each
batch (the prompt with its image tokens, labels on the target answer) comes from mirage's collator.

The optimised pixels are whole 8-bit levels, so the lossless PNG holds exactly the optimised image; the loss
is measured again from the PNG, through the processor, as the evaluation reads it (``loss_saved``). The
result (``adversarial.png``, ``start.png``, ``result.json``: settings, targets, the loss at every step) goes
into ``<cache_dir>/visual_pgd-<key>/``, keyed by the model directory's files, every setting, the target
corpus and the start image (:mod:`mirage.evaluation.attacks.pgd_cache`), and is reused when present.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mirage.data.records import DataError, Sample, load_json_records
from mirage.evaluation.attacks.base import Attack
from mirage.evaluation.attacks.pgd import LEVELS, optimise, start_image, target_loss
from mirage.evaluation.attacks.pgd_cache import model_fingerprint, read_result, write_result
from mirage.evaluation.attacks.pixel_layout import PixelLayout, input_size
from mirage.utils.hashing import stable_hash

log = logging.getLogger(__name__)

VERSION = 1  # of the optimisation: part of the cache key, raised when what it computes changes
DEVICES = ("auto", "cpu", "cuda")
REQUIRED = {
    "model_dir": "the model whose gradients shape the image (default: model.name_or_path, model=checkpoint)",
    "targets_file": "the harmful target answers, e.g. <data root>/forget.json",
    "cache_dir": "where the image is kept",
}


def read_targets(path: str | Path, count: int | None = None, seed: int = 0) -> list[str]:
    """Distinct target answers of a file, in file order; ``count`` of them chosen with ``seed`` when given.

    The file is text (one target a line), or JSON / JSON Lines records that are LLaVA conversations (the last
    ``gpt`` turn, e.g. a forget split) or that have an ``answer`` field."""
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise DataError(path, "file not found")
        answers = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        answers = []
        for index, record in enumerate(load_json_records(path)):
            turns = record.get("conversations")
            answer = turns[-1].get("value") if isinstance(turns, list) and turns else record.get("answer")
            if not isinstance(answer, str) or not answer.strip():
                raise DataError(
                    path,
                    "expected an answer: a conversation ending in a 'gpt' turn, or an 'answer' string",
                    index=index,
                    record_id=record.get("id"),
                    field="answer",
                )
            answers.append(answer.strip())
    answers = list(dict.fromkeys(answers))
    if not answers:
        raise DataError(path, "no target answers")
    if count is not None and count < len(answers):
        keep = set(random.Random(seed).sample(range(len(answers)), count))
        answers = [a for i, a in enumerate(answers) if i in keep]
    return answers


class VisualPGDAttack(Attack):
    """Every sample shown the universal adversarial image of ``model_dir`` (computed once, then cached)."""

    def __init__(
        self,
        model_dir: str | Path | None,
        targets_file: str | Path | None,
        epsilon: int = 16,
        steps: int = 500,
        step_size: int = 1,
        num_targets: int | None = 16,
        prompt: str = "",
        init_image: str | None = None,
        image_size: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        dtype: str = "float32",
        device: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        given = {"model_dir": model_dir, "targets_file": targets_file, "cache_dir": cache_dir}
        for key, value in given.items():
            if value is None or not str(value):
                raise ValueError(f"visual_pgd: set attack.{key}: {REQUIRED[key]}")
        if not 1 <= int(epsilon) <= LEVELS:
            raise ValueError(
                f"visual_pgd: epsilon is in 8-bit levels, 1..{LEVELS} ({LEVELS}: none), got {epsilon}"
            )
        for key, value in {"steps": steps, "step_size": step_size, "batch_size": batch_size}.items():
            if int(value) < (0 if key == "steps" else 1) or int(value) != value:
                raise ValueError(
                    f"visual_pgd: {key} must be a whole number >= {0 if key == 'steps' else 1}, got {value}"
                )
        if num_targets is not None and int(num_targets) < 1:
            raise ValueError(f"visual_pgd: num_targets must be positive or null (all), got {num_targets}")
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"visual_pgd: image_size must be positive or null, got {image_size}")
        self.model_dir, self.targets_file = Path(model_dir), Path(targets_file)
        self.cache_dir = Path(cache_dir)
        self.settings = {
            "epsilon": int(epsilon),
            "steps": int(steps),
            "step_size": int(step_size),
            "num_targets": None if num_targets is None else int(num_targets),
            "prompt": str(prompt),
            "init_image": None if init_image is None else str(init_image),
            "image_size": None if image_size is None else int(image_size),
            "batch_size": int(batch_size),
            "seed": int(seed),
            "dtype": str(dtype),
        }
        if device not in DEVICES:
            raise ValueError(f"visual_pgd: device must be one of {DEVICES}, got {device!r}")
        self.device = device
        self.name = "visual_pgd_" + ("unconstrained" if int(epsilon) == LEVELS else f"eps{int(epsilon)}")
        self.computed = False  # whether this instance ran the optimisation (False: the cache served it)
        self._result: dict[str, Any] | None = None

    def key(self) -> str:
        """Everything the image depends on: the model's files, the settings, the corpus, the start image."""
        targets = read_targets(self.targets_file, self.settings["num_targets"], self.settings["seed"])
        init = self.settings["init_image"]
        start = model_fingerprint(Path(init)) if init else None
        return stable_hash(
            {
                "version": VERSION,
                "model": model_fingerprint(self.model_dir),
                "settings": self.settings,
                "targets": targets,
                "init": start,
            }
        )[:16]

    def result(self) -> dict[str, Any]:
        """``result.json`` of this attack's image (``image`` is the adversarial PNG's path)."""
        if self._result is None:
            folder = self.cache_dir / f"visual_pgd-{self.key()}"
            self._result = read_result(folder)
            if self._result is None:
                self._result = write_result(folder, self._build)
                self.computed = True
        return self._result

    def image(self) -> Path:
        return Path(self.result()["image"])

    def _build(self, folder: Path) -> dict[str, Any]:
        from mirage.models.loading import load_vlm

        settings, started = self.settings, time.perf_counter()
        targets = read_targets(self.targets_file, settings["num_targets"], settings["seed"])
        model, processor = load_vlm(self.model_dir, dtype=settings["dtype"])
        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval().requires_grad_(False)  # gradients reach the pixels only
        side = settings["image_size"]
        size = (side, side) if side else input_size(processor.image_processor)
        layout = PixelLayout(processor.image_processor, *size)
        start, adversarial = folder / "start.png", folder / "adversarial.png"
        Image.fromarray(start_image(settings["init_image"], size, settings["seed"]), "RGB").save(start)
        prompt, batch_size = settings["prompt"], settings["batch_size"]
        run = optimise(
            model, processor, layout, start, prompt, targets,
            epsilon=settings["epsilon"], steps=settings["steps"], step_size=settings["step_size"],
            batch_size=batch_size,
        )  # fmt: skip
        Image.fromarray(run["image"], "RGB").save(adversarial)  # PNG: lossless, the optimised uint8 pixels
        result = {
            "settings": settings,
            "model_dir": str(self.model_dir),
            "targets_file": str(self.targets_file),
            "targets": targets,
            "image_size": list(size),
            "device": device,
            "loss_start": target_loss(model, processor, start, prompt, targets, batch_size),
            "loss_saved": target_loss(model, processor, adversarial, prompt, targets, batch_size),
            "loss_optimised": run["best_loss"],
            "best_step": run["best_step"],
            "losses": run["losses"],
            "seconds": time.perf_counter() - started,
        }
        log.info(
            "visual_pgd: target loss %.4f -> %.4f (saved PNG) in %d steps, %.1f s, into %s",
            *(result["loss_start"], result["loss_saved"], settings["steps"], result["seconds"], folder),
        )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        return result

    def apply(self, samples: Sequence[Sample]) -> list[Sample]:
        self.image()  # once, before any sample (loads the model only when the cache does not have it)
        return super().apply(samples)

    def rewrite(self, sample: Sample) -> list[Sample]:
        new = self.variant(
            sample,
            shot=sample.meta.get("shot", 0),
            original_image=str(sample.image) if sample.image is not None else None,
            epsilon=self.settings["epsilon"],
        )
        new.image = self.image()
        return [new]
