"""The probe interface.

A probe turns one audited model (:class:`AuditTarget`) into :class:`ProbeVariant` s. A variant is a
label, the mirage-eval overrides that realise it (the model loaded another way, a steering hook, an attack
on the audit's cases), the numbers a plot needs (``params``), and optionally mirage-train overrides of a
model to train first (relearning): the audit then trains that model from the audited one, and the
variant's evaluation asks the trained export. Anything a probe computes itself (a direction, an
adversarial image) goes under ``target.work_dir`` and is reused when it is there, so a killed audit resumes.

The audit's evaluation asks the paper's four cases (``plain_asr``, ``what3_asr``, ``plain_rr``,
``share1_rr``). A probe that changes the model keeps them; a probe that is an attack puts its attack on
the plain cases and drops the one-word ones (:func:`attack_variant`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNSAFE_CASE, SAFE_CASE = "plain_asr", "plain_rr"
ONE_WORD_CASES = ("what3_asr", "share1_rr")


@dataclass(frozen=True)
class ProbeVariant:
    """One way of asking the probed model."""

    label: str  # e.g. "quantize/nf4", "relearn/forget/25", "figstep"
    overrides: tuple[str, ...] = ()  # mirage-eval overrides that realise it
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"steps": 25, "data": "forget"}
    train_overrides: tuple[str, ...] | None = None  # mirage-train overrides of a model to train first


@dataclass(frozen=True)
class AuditTarget:
    """One audited model and what a probe may need to know about it."""

    name: str  # the model's label in the audit
    model_dir: Path  # its exported hf/ directory (full weights or a LoRA adapter)
    work_dir: Path  # where probes keep what they compute for this model (reused on resume)
    seed: int = 0
    train_overrides: tuple[str, ...] = ()  # mirage-train overrides of the data the model learned from


class Probe:
    """Base class: ``name`` and :meth:`variants`."""

    name = "probe"

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What changes this probe's variants (part of every cache key of its results)."""
        return {}


def attack_variant(
    label: str, attack: str, params: dict[str, Any] | None = None, **fields: Any
) -> ProbeVariant:
    """A variant that asks the unsafe and safe questions under ``attack`` (an option of configs/attack/, set
    with ``fields``) instead of the one-word attacks."""
    overrides = [f"cases.{case}=null" for case in ONE_WORD_CASES]
    for case in (UNSAFE_CASE, SAFE_CASE):
        overrides.append(f"attack@cases.{case}.attack={attack}")
        overrides += [f"cases.{case}.attack.{key}={override_value(value)}" for key, value in fields.items()]
    return ProbeVariant(label=label, overrides=tuple(overrides), params=dict(params or {}))


def override_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and all(c.isalnum() or c in "._/-" for c in value) else repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


ROOT_KEYS = ("data.root", "+data.root", "++data.root")


def forget_split(target: AuditTarget, given: str | None, probe: str, key: str) -> Path:
    """``given`` (a probe's own file), else ``<data.root>/forget.json`` of the data the target learned from
    (its ``train_overrides``; the last ``data.root`` wins, as in Hydra)."""
    if given is not None:
        return Path(given)
    roots = [o.split("=", 1)[1] for o in target.train_overrides if o.split("=", 1)[0] in ROOT_KEYS]
    if not roots:
        raise ValueError(
            f"probe {probe}: model {target.name!r}: no {key}, and its train overrides "
            f"{list(target.train_overrides)} set no data.root to find the forget split in; set "
            f"probes.{probe}.{key}"
        )
    return Path(roots[-1]) / "forget.json"
