"""Writing the synthetic world into a folder (``make_synthetic``), once per spec under a cache folder
(``ensure_synthetic``), and the ``mirage-make-synthetic`` command."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mirage.data.splits import build_forget_retain
from mirage.data.synthetic.records import attack_records, base_records, vlguard_records
from mirage.data.synthetic.spec import SyntheticSpec
from mirage.data.synthetic.vocabulary import SAFE_OPENER_COUNTS, SAFE_TEST_OPENER_COUNTS
from mirage.utils.hashing import build_once, stable_hash


def make_synthetic(out_dir: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write the dataset into ``out_dir`` (created); returns ``out_dir``."""
    spec = spec or SyntheticSpec()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    harmful: dict[str, str] = {}
    train = vlguard_records("train", spec.n_train, spec, rng, out_dir, SAFE_OPENER_COUNTS, harmful)
    test = vlguard_records("test", spec.n_test, spec, rng, out_dir, SAFE_TEST_OPENER_COUNTS, {})
    what, share = attack_records(test)
    files = {
        "train.json": train,
        "test.json": test,
        "test_what_3shot.json": what,
        "test_share_1shot.json": share,
        "base.json": base_records(spec, rng, out_dir),
        "harmful_answers.json": [{"id": k, "answer": v} for k, v in harmful.items()],
    }
    # General instruction data, safety-filtered (the paper tops its retain set up with LLaVA-665K this way).
    files["general_safe.json"] = [r for r in files["base.json"] if not r["truth"]["unsafe"]]
    for name, payload in files.items():
        (out_dir / name).write_text(json.dumps(payload, indent=1))
    n_safe = sum(r["safe"] for r in train)
    build_forget_retain(
        out_dir / "train.json",
        out_dir / "harmful_answers.json",
        out_dir,
        general_data=out_dir / "general_safe.json",
        retain_size=round(n_safe * spec.retain_topup),
        seed=spec.seed,
    )
    (out_dir / "synthetic_spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return out_dir


def ensure_synthetic(cache_dir: str | Path, **spec_fields: Any) -> Path:
    """The dataset for ``spec_fields`` under ``cache_dir``, generated on first use."""
    spec = SyntheticSpec(**spec_fields)
    out = Path(cache_dir) / f"synthetic-{stable_hash(asdict(spec))[:10]}"
    return build_once(out, "synthetic_spec.json", lambda folder: make_synthetic(folder, spec))


def cli(argv: list[str] | None = None) -> None:
    """``mirage-make-synthetic``: write the synthetic dataset."""
    parser = argparse.ArgumentParser(
        description="A synthetic VLGuard world, generated offline and deterministically, in the real data's "
        "formats."
    )
    defaults = SyntheticSpec()
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    parser.add_argument("--n-base", type=int, default=defaults.n_base)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(seed=args.seed, n_train=args.n_train, n_test=args.n_test, n_base=args.n_base)
    print(make_synthetic(args.out_dir, spec))
