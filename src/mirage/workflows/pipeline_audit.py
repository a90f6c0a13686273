"""The pipeline's audit step: ``mirage-audit`` on chosen stages, and the report's "Does the safety survive?".

``audit.models`` names stages; each is audited from its exported ``hf/`` with the probes of the mirage-audit
config that ``audit.overrides`` composes (e.g. ``experiment=audit_demo``). ``audit.train_overrides`` (the
data the stages learned from, for relearning) and ``audit.evaluation_overrides`` (how every variant is asked)
replace the audit config's own. The audit writes into ``<run dir>/audit/`` and caches under
``audit_cache_dir``, so a second run of the pipeline redoes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mirage.evaluation.formatting import percent
from mirage.workflows.configs import compose

log = logging.getLogger(__name__)
BASELINE = "none"
MARKS = {"recovers": " ⚠", "uninformative": " ?"}


def audit_config(spec: DictConfig, stage_dirs: dict[str, Path], cfg: DictConfig, out_dir: Path) -> DictConfig:
    """The mirage-audit config of the pipeline's ``audit`` block."""
    models = [str(m) for m in spec.get("models") or []]
    unknown = [m for m in models if m not in stage_dirs]
    if not models or unknown:
        raise KeyError(
            f"audit.models must name stages; unknown: {unknown or 'none given'}; stages: {list(stage_dirs)}"
        )
    overrides = [
        *[str(o) for o in spec.get("overrides") or []],
        f"seed={int(cfg.seed)}",
        f"paths.cache_dir={cfg.paths.cache_dir}",
        f"paths.output_dir={out_dir}",
        "paths.work_dir=.",
    ]
    audit_cfg = compose("audit", overrides)
    OmegaConf.update(audit_cfg, "models", {m: str(stage_dirs[m] / "hf") for m in models}, merge=False)
    replaced = {"train_overrides": "train_overrides", "evaluation_overrides": "evaluation.overrides"}
    for key, target in replaced.items():
        if spec.get(key) is not None:
            OmegaConf.update(audit_cfg, target, [str(o) for o in spec[key]], merge=False)
    return audit_cfg


def survival_section(payload: dict[str, Any], labels: dict[str, str], out_dir: Path, report_dir: Path) -> str:
    """The report's "Does the safety survive?": ASR under each probe, the relearning plot, a line a model."""
    models = payload["models"]
    variants = list(dict.fromkeys(label for rows in models.values() for label in rows))
    lines = [
        "## Does the safety survive?",
        "",
        f"ASR (%) on the unsafe questions under each probe of the audit (`{out_dir.name}/audit.md` has every "
        f"rate with its interval and test). ⚠ = the probe recovers the harm: ASR up by at least "
        f"{100 * payload['threshold']:.0f} points over the unprobed model, Holm-adjusted "
        f"p < {payload['alpha']}; ? = uninformative (the compliant reference model's ASR stays under the "
        "threshold too).",
        "",
        "| model | " + " | ".join("unprobed" if v == BASELINE else v for v in variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for model, rows in models.items():
        cells = []
        for variant in variants:
            asr = ((rows.get(variant) or {}).get("cells") or {}).get("ASR")
            mark = MARKS.get((rows.get(variant) or {}).get("verdict") or "", "")
            cells.append(percent(asr["value"]) + mark if asr else "-")
        lines.append(f"| {labels.get(model, model)} | " + " | ".join(cells) + " |")
    lines += ["", *survival_sentences(models, labels, payload.get("reference"), payload["threshold"]), ""]
    plot = out_dir / "relearn.png"
    if plot.is_file():
        lines += [f"![ASR against relearning steps]({plot.relative_to(report_dir)})", ""]
    return "\n".join(lines)


def survival_sentences(
    models: dict[str, dict[str, dict]],
    labels: dict[str, str],
    reference: str | None = None,
    threshold: float = 0.10,
) -> list[str]:
    """One line per model: the probes that bring its harm back (ASR before -> after), or that none does;
    for the compliant reference model, the probes that cannot make even it comply."""
    out = []
    for model, rows in models.items():
        before = (rows.get(BASELINE, {}).get("cells") or {}).get("ASR")
        if model == reference:
            low = [
                label
                for label, row in rows.items()
                if (row["cells"].get("ASR") or {}).get("value", 1.0) < threshold and label != BASELINE
            ]
            text = f"- **{labels.get(model, model)}** is the compliant reference"
            text += f" (ASR {percent(before['value'])} unprobed)" if before else ""
            text += f"; these probes cannot make even it comply: {', '.join(low)}." if low else "."
            out.append(text)
            continue
        broken = [
            f"{label} ({percent(before['value'])} -> {percent(row['cells']['ASR']['value'])})"
            for label, row in rows.items()
            if row.get("verdict") == "recovers" and before and "ASR" in row["cells"]
        ]
        quiet = [label for label, row in rows.items() if row.get("verdict") == "uninformative"]
        name = labels.get(model, model)
        if broken:
            text = f"- **{name}**: the harm comes back under {', '.join(broken)}."
        else:
            text = f"- **{name}**: holds under every probe."
        if quiet:
            text += f" Uninformative here: {', '.join(quiet)}."
        out.append(text)
    return out


def finish_audit(
    audit_cfg: DictConfig, audited: dict[str, dict], output_dir: Path, labels: dict[str, str]
) -> dict[str, float]:
    """The verdicts over every audited model (``audited``: each model's rows), the audit's cards, and its
    section appended to ``report.md``; returns its summary."""
    from mirage.workflows.audit import run_audit

    summary, objects = run_audit(audit_cfg, done=audited)
    report = output_dir / "report.md"
    section = survival_section(objects["payload"], labels, Path(audit_cfg.paths.output_dir), output_dir)
    report.write_text(report.read_text().rstrip("\n") + "\n\n" + section)
    return {f"audit/{key}": value for key, value in summary.items()}
