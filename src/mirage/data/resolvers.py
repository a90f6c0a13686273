"""OmegaConf resolvers that generate data on first use: ``synthetic_data`` and ``synthetic_corpus``."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register the data resolvers (idempotent)."""
    if not OmegaConf.has_resolver("synthetic_data"):

        def synthetic_data(cache_dir: str, seed: int = 0, *sizes: Any) -> str:
            """``${synthetic_data:<cache dir>,<seed>[,n_train,n_test,n_base][,world]}``: the generated
            folder (world: ``objects8`` unless named, see ``synthetic.vocabulary.WORLDS``)."""
            from mirage.data.synthetic import ensure_synthetic

            names = ("n_train", "n_test", "n_base")
            world = sizes[-1] if sizes and isinstance(sizes[-1], str) else None
            sizes = sizes[:-1] if world is not None else sizes
            if len(sizes) > len(names):
                raise ValueError(f"synthetic_data takes at most {2 + len(names)} sizes")
            fields = {name: int(value) for name, value in zip(names, sizes, strict=False)}
            if world is not None:
                fields["world"] = world
            return str(ensure_synthetic(cache_dir, seed=int(seed), **fields))

        OmegaConf.register_new_resolver("synthetic_data", synthetic_data, use_cache=True)
    if not OmegaConf.has_resolver("synthetic_corpus"):

        def synthetic_corpus() -> list[str]:
            """``${synthetic_corpus:}``: the synthetic world's phrases, for a tiny model's tokenizer."""
            from mirage.data.synthetic import corpus

            return corpus()

        OmegaConf.register_new_resolver("synthetic_corpus", synthetic_corpus, use_cache=True)
    if not OmegaConf.has_resolver("synthetic_objects"):

        def synthetic_objects(world: str = "objects8") -> list[str]:
            """``${synthetic_objects:kinds6}``: a synthetic world's object names (vision pre-training)."""
            from mirage.data.synthetic.vocabulary import world_objects

            return [kind[0] for kind in world_objects(world)]

        OmegaConf.register_new_resolver("synthetic_objects", synthetic_objects, use_cache=True)
