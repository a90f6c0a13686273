"""Answers per second of batched vs one-at-a-time greedy generation, side by side, as a ratio.

Both modes answer the same prompts with the same model in the same process, alternating rounds,
and the answers must be identical (the script fails otherwise).

    .venv/bin/python benchmarks/generation.py --sizes tiny,50m --n 32 --batch-size 16 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,50m")
    parser.add_argument("--n", type=int, default=32, help="prompts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from mirage.data.readers import read_vlguard
    from mirage.data.synthetic import ensure_synthetic
    from mirage.evaluation.generation import GenerationConfig, generate_batch
    from mirage.models.loading import load_vlm
    from mirage.models.tiny import PRESETS, TinyVLMSpec, build_tiny_vlm

    torch.set_num_threads(2)
    cache = Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "mirage-bench-cache"))
    data = ensure_synthetic(cache / "datasets", seed=0)
    samples = (read_vlguard(data / "test.json") * 4)[: args.n]
    for size in args.sizes.split(","):
        model, processor = load_vlm(build_tiny_vlm(TinyVLMSpec(**PRESETS[size]), cache / "tiny_models"))
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        timings: dict[str, list[float]] = {"batched": [], "single": []}
        answers: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            start = time.perf_counter()
            batched = []
            for i in range(0, len(samples), args.batch_size):
                batched += generate_batch(model, processor, samples[i : i + args.batch_size], config)
            timings["batched"].append(time.perf_counter() - start)
            start = time.perf_counter()
            single = [generate_batch(model, processor, [s], config)[0] for s in samples]
            timings["single"].append(time.perf_counter() - start)
            answers = {"batched": batched, "single": single}
        if answers["batched"] != answers["single"]:
            mismatches = sum(a != b for a, b in zip(answers["batched"], answers["single"], strict=True))
            raise SystemExit(
                f"{size}: {mismatches} of {len(samples)} batched answers differ from single ones"
            )
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio = statistics.median(timings["single"]) / statistics.median(timings["batched"])
        print(
            f"{size} ({params:.1f}M parameters, {len(samples)} prompts, batch {args.batch_size}, "
            f"{args.max_new_tokens} new tokens): batched answers/s = {ratio:.2f} x one-at-a-time; "
            f"answers identical"
        )


if __name__ == "__main__":
    main()
