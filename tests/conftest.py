"""Shared fixtures: offline environment, a tiny LLaVA and the synthetic dataset built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No hub, no W&B account: everything in the tests is built or written locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_llava_dir(cache_dir) -> Path:
    from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

    return build_tiny_vlm(TinyVLMSpec(family="llava"), cache_dir / "tiny_models")


@pytest.fixture(scope="session")
def synthetic_dir(cache_dir) -> Path:
    from mirage.data.synthetic import ensure_synthetic

    return ensure_synthetic(cache_dir / "datasets", seed=0)


@pytest.fixture()
def tiny_llava(tiny_llava_dir):
    """A freshly loaded (model, processor) pair; tests may modify it."""
    from mirage.models.loading import load_vlm

    return load_vlm(tiny_llava_dir)


@pytest.fixture(scope="session")
def processor(tiny_llava_dir):
    from mirage.models.loading import load_processor

    return load_processor(tiny_llava_dir)
