"""Building tiny VLMs into a cache, loading them (``model=tiny``) and the ``mirage-build-tiny`` command.

Each build is cached under a directory named after a hash of its spec; a multirun whose jobs race
to build the same model each build into a temporary directory and one rename wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mirage.models.families import add_config_dir, tiny_builder, tiny_model_types
from mirage.models.tiny.spec import PRESETS, TinyVLMSpec

log = logging.getLogger(__name__)


def build_tiny_vlm(
    spec: TinyVLMSpec | dict[str, Any], cache_dir: str | Path, *, rebuild: bool = False
) -> Path:
    """Build (or find in ``cache_dir``) the tiny model for ``spec``; returns its checkpoint directory.

    The builder is the one the family config names for ``spec.family`` (``tiny_builders``)."""
    spec = spec if isinstance(spec, TinyVLMSpec) else TinyVLMSpec(**spec)
    builder = tiny_builder(spec.family)  # an unknown family fails here, with the known ones listed
    cache_dir = Path(cache_dir).resolve()  # absolute: LoRA exports record the base model's path
    target = cache_dir / spec.key()
    if target.exists() and not rebuild:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key()}-", dir=cache_dir))
    try:
        # Builders seed torch for their weights; the caller's random state must not depend on whether the
        # model was cached (a training run seeds its data order from it).
        with torch.random.fork_rng(devices=[]):
            builder(spec, tmp)
        (tmp / "mirage_tiny_spec.json").write_text(_spec_json(spec))
        if rebuild and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another job won the race; its build is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny %s model at %s", spec.family, target)
    return target


def load_tiny_vlm(cache_dir: str | Path, spec: dict[str, Any] | None = None, **load_kwargs: Any):
    """Hydra target of ``model=tiny`` (and ``tiny_llava``): build on first use, then ``load_vlm`` it."""
    from mirage.models.loading import load_vlm

    path = build_tiny_vlm(TinyVLMSpec(**(spec or {})), cache_dir)
    return load_vlm(path, **load_kwargs)


def _spec_json(spec: TinyVLMSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True)


def cli(argv: list[str] | None = None) -> None:
    """``mirage-build-tiny``: write a tiny checkpoint directory."""
    parser = argparse.ArgumentParser(
        description="Build a tiny VLM offline (random weights, trained tokenizer)."
    )
    parser.add_argument(
        "--family", default="llava", help="a model type with a tiny builder (configs/family/)"
    )
    parser.add_argument("--out", default="data/cache/tiny_models", help="cache directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size")
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        help="a config folder whose family/ holds more families (repeatable)",
    )
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    for folder in args.config_dir:
        add_config_dir(folder)
    if args.family not in tiny_model_types():
        parser.error(f"--family {args.family!r}: no tiny builder; known: {', '.join(tiny_model_types())}")
    spec = TinyVLMSpec(family=args.family, seed=args.seed, **PRESETS[args.preset])
    path = build_tiny_vlm(spec, args.out, rebuild=args.rebuild)
    print(path)
