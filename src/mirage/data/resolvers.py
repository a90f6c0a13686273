"""OmegaConf resolvers that generate data on first use: ``synthetic_data`` and ``synthetic_corpus``."""

from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register the data resolvers (idempotent)."""
    if not OmegaConf.has_resolver("synthetic_data"):

        def synthetic_data(cache_dir: str, seed: int = 0, *sizes: int) -> str:
            """``${synthetic_data:<cache dir>,<seed>[,n_train,n_test,n_base]}``: the generated folder."""
            from mirage.data.synthetic import ensure_synthetic

            names = ("n_train", "n_test", "n_base")
            if len(sizes) > len(names):
                raise ValueError(f"synthetic_data takes at most {2 + len(names)} arguments")
            fields = {name: int(value) for name, value in zip(names, sizes, strict=False)}
            return str(ensure_synthetic(cache_dir, seed=int(seed), **fields))

        OmegaConf.register_new_resolver("synthetic_data", synthetic_data, use_cache=True)
    if not OmegaConf.has_resolver("synthetic_corpus"):

        def synthetic_corpus() -> list[str]:
            """``${synthetic_corpus:}``: the synthetic world's phrases, for a tiny model's tokenizer."""
            from mirage.data.synthetic import corpus

            return corpus()

        OmegaConf.register_new_resolver("synthetic_corpus", synthetic_corpus, use_cache=True)
