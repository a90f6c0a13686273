"""Evaluation cases: one mechanism, so that every override either reaches every case or is refused.

mirage-eval's config has a top-level ``benchmark``, ``attack`` (absent by default: no attack) and
``generation``, and a dict of ``cases``. A case says only what it changes:

- ``benchmark``: fields merged over the top-level benchmark (``subsets``, ``path``, ``max_questions``...).
  So ``benchmark.max_questions=4`` or ``benchmark=vlguard_test`` reaches every case. A case that names a
  reader of its own (a ``_target_`` other than the top-level one) is allowed only when the config sets
  no top-level benchmark (``override /benchmark: null`` in an experiment of mixed benchmarks).
- ``attack``: the case's own attack (e.g. ``/attack@cases.what3_asr.attack: what_3shot``). A top-level
  ``attack=...`` applies to every case without one; given while some case has its own, the run is
  refused with an error naming those cases (change one with ``cases.<name>.attack=...``).
- ``generation``: fields merged over the top-level generation settings.

``judges`` are top-level only, so ``judge=...`` always applies to every case. ``cases.<name>=null``
drops a case.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mirage.utils.hashing import file_hash

CASE_KEYS = ("benchmark", "attack", "generation")
NO_ATTACK = {"_target_": "mirage.evaluation.attacks.none.NoAttack"}


class CaseConfigError(ValueError):
    """An evaluation config whose cases and top-level settings contradict each other."""


def _describe(node: Any) -> str:
    target = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    fields = ", ".join(
        f"{k}={v}" for k, v in node.items() if k != "_target_" and not isinstance(v, DictConfig)
    )
    return f"{target}({fields})" if fields else target


def _merged(base: DictConfig | None, delta: DictConfig | None) -> DictConfig | None:
    if base is None:
        return delta
    if delta is None:
        return base
    return OmegaConf.merge(base, delta)


def resolve_cases(cfg: DictConfig) -> dict[str, DictConfig]:
    """``{case name: {benchmark, attack, generation}}`` as each case will run (interpolations kept).

    Raises :class:`CaseConfigError` naming the cases when a top-level setting could not reach them."""
    cases = {name: spec for name, spec in (cfg.get("cases") or {}).items() if spec is not None}
    if not cases:
        raise CaseConfigError(
            "no evaluation cases: set `cases` (see configs/experiment/mirage_eval_tiny.yaml)"
        )
    for name, spec in cases.items():
        unknown = sorted(set(spec) - set(CASE_KEYS)) if isinstance(spec, DictConfig) else ["<not a dict>"]
        if unknown:
            raise CaseConfigError(f"case {name!r}: unknown keys {unknown}; a case may set {list(CASE_KEYS)}")
    top_benchmark, top_attack = cfg.get("benchmark"), cfg.get("attack")
    own_attack = {
        n: s.attack for n, s in cases.items() if s.get("attack") is not None and "_target_" in s.attack
    }
    if top_attack is not None and own_attack:
        named = ", ".join(f"{n} ({_describe(a)})" for n, a in own_attack.items())
        raise CaseConfigError(
            f"the top-level attack {_describe(top_attack)} would not reach cases that set their own attack: "
            f"{named}. Change a case's attack with cases.<name>.attack=... (or cases.<name>=null to drop it)"
        )
    if top_benchmark is not None:
        own_reader = [
            n
            for n, s in cases.items()
            if s.get("benchmark") is not None
            and s.benchmark.get("_target_", top_benchmark.get("_target_")) != top_benchmark.get("_target_")
        ]
        if own_reader:
            raise CaseConfigError(
                f"cases {own_reader} name a benchmark reader of their own, which the top-level benchmark "
                f"({_describe(top_benchmark)}) and its overrides would not reach; an experiment of mixed "
                "benchmarks sets `override /benchmark: null`"
            )
    resolved = {}
    for name, spec in cases.items():
        benchmark = _merged(top_benchmark, spec.get("benchmark"))
        if benchmark is None or "_target_" not in benchmark:
            raise CaseConfigError(
                f"case {name!r} has no benchmark: set `benchmark=` or cases.{name}.benchmark"
            )
        attack = spec.get("attack") if name in own_attack else _merged(top_attack, spec.get("attack"))
        if attack is not None and "_target_" not in attack:
            raise CaseConfigError(
                f"case {name!r} sets attack fields {sorted(attack)} but no attack is chosen (attack=...)"
            )
        generation = _merged(cfg.get("generation"), spec.get("generation"))
        resolved[name] = OmegaConf.create(
            {
                "benchmark": benchmark,
                "attack": attack if attack is not None else NO_ATTACK,
                "generation": generation,
            }
        )
        # Interpolations (${paths...}, ${benchmark_root}) resolve against the whole config.
        resolved[name]._set_parent(cfg)
    return resolved


def cases_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What decides every case's answers and verdicts, resolved: the key of a cached evaluation. That is the
    cases, the judges, how the model is loaded (dtype, quantization) and steered, and its weight files (by
    name, size and time). Files the settings name (benchmark and rewrite files, phrase lists, grammar
    files) count by their content, so a file edited in place is not served from a stale evaluation."""
    cases = resolve_cases(cfg)
    settings = {
        "cases": {name: OmegaConf.to_container(case, resolve=True) for name, case in cases.items()},
        "judges": OmegaConf.to_container(cfg.get("judges") or {}, resolve=True),
    }
    model = {
        key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "steering") if cfg.get(key)
    }
    weights = weight_files((model.get("model") or {}).get("name_or_path"))
    files = {path: file_hash(path) for path in sorted(_named_files(settings))}
    return {**settings, "files": files, **model, "weights": weights}


def weight_files(name_or_path: Any) -> list[tuple[str, int, int]] | None:
    """Names, sizes and modification times of a local model directory's weight files (hashing gigabytes
    of weights would take longer than most evaluations)."""
    if not isinstance(name_or_path, str) or not os.path.isdir(name_or_path):
        return None
    names = sorted(n for n in os.listdir(name_or_path) if n.endswith((".safetensors", ".bin")))
    stats = [os.stat(os.path.join(name_or_path, n)) for n in names]
    return [(n, s.st_size, s.st_mtime_ns) for n, s in zip(names, stats, strict=True)]


def _named_files(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_named_files(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_named_files(value) for value in node))
    return {node} if isinstance(node, str) and os.path.isfile(node) else set()
