"""``mirage-analyze``: analyses that read data or finished runs.

    mirage-analyze cues data/vlguard/train.json [--out reports/cues] [--max-n 2]
    mirage-analyze narrow logs/narrow_ft_tiny/multiruns/<ts> [hydra overrides, e.g. sampling.k=5]

``cues`` counts first words and n-grams of any VLGuard-schema file with P(unsafe | token).
``narrow`` evaluates every run of a narrow fine-tuning sweep against its base model (misalignment
text-only and multimodal, PCA of activation differences, steering) and writes one report; its
settings are ``configs/narrow_study.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def compose_study(runs_dir: str, overrides: list[str]):
    """The composed ``narrow_study.yaml`` with ``runs_dir`` and the user's overrides."""
    from hydra.core.global_hydra import GlobalHydra

    from mirage.workflows.configs import compose

    GlobalHydra.instance().clear()
    return compose("narrow_study.yaml", [f"runs_dir={Path(runs_dir).resolve()}", *overrides])


def _cues(args: argparse.Namespace) -> None:
    from mirage.analysis.cues import markdown_table, write_cues

    out = Path(args.out) if args.out else Path(args.dataset).with_suffix("").parent / "cues"
    tables = write_cues(args.dataset, out, max_n=args.max_n, top=args.top, min_count=args.min_count)
    print(markdown_table(tables["first word"][: args.top], "first word"))
    print(f"tables and plot in {out}")


def _narrow(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from mirage.analysis.narrow_study import run_study

    cfg = compose_study(args.runs_dir, args.overrides)
    logging.info("narrow study config:\n%s", OmegaConf.to_yaml(cfg))
    run_study(cfg)
    out = Path(cfg.out_dir)
    print((out / "table.md").read_text())
    print(f"report in {out}")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="mirage-analyze", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cues = sub.add_parser("cues", help="first-word and n-gram statistics of a VLGuard-schema file")
    cues.add_argument("dataset", help="a VLGuard-schema JSON file")
    cues.add_argument("--out", help="output folder (default: <dataset folder>/cues)")
    cues.add_argument("--max-n", type=int, default=2, help="longest n-gram counted anywhere in the text")
    cues.add_argument("--top", type=int, default=20, help="rows shown per table")
    cues.add_argument("--min-count", type=int, default=5, help="n-grams rarer than this are left out")
    cues.set_defaults(func=_cues)
    narrow = sub.add_parser(
        "narrow", help="misalignment, geometry and steering of a narrow fine-tuning sweep"
    )
    narrow.add_argument("runs_dir", help="a mirage-train multirun folder (or one run folder)")
    narrow.add_argument("overrides", nargs="*", help="Hydra overrides of configs/narrow_study.yaml")
    narrow.set_defaults(func=_narrow)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
