"""Apply judges in order (the paper's: refusal keywords, then irrelevance rules, then an LLM judge).

The first deciding judge that returns a decision labels the answer; later deciding judges only
see the answers still undecided. Annotating judges (``decides = False``, e.g. a harm judge) see
every answer. An answer that no judge labels counts as ``relevant`` (nothing objected to it).
Verdicts are cached per judge, so a resumed or repeated evaluation re-judges nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirage.evaluation.judges.base import Judge, JudgeInput
from mirage.evaluation.judges.cache import VerdictCache, run_judge


def judge_input(record: dict[str, Any]) -> JudgeInput:
    meta = {
        k: record.get(k) for k in ("id", "subset", "harmful_category", "reference_answer", "truth", "attack")
    }
    image = Path(record["image"]) if record.get("image") else None
    return JudgeInput(question=record["question"], answer=record["answer"], image=image, meta=meta)


def judge_records(
    records: list[dict[str, Any]],
    judges: list[Judge],
    cache_dir: str | Path,
    description: str = "judging",
    quiet: bool = False,
) -> None:
    """Fill ``record['verdicts']`` (judge name -> verdict) and ``record['label']`` in place (``quiet``: no
    progress bars)."""
    cache_dir = Path(cache_dir)
    for record in records:
        record["verdicts"], record["label"] = {}, None
    for judge in judges:
        targets = [r for r in records if r["label"] is None or not judge.decides]
        if not targets:
            continue
        cache = VerdictCache(cache_dir / f"{judge.key}.jsonl")
        verdicts = run_judge(
            judge,
            [judge_input(r) for r in targets],
            cache,
            progress_description=f"{description}: {judge.name}",
            quiet=quiet,
        )
        for record, verdict in zip(targets, verdicts, strict=True):
            record["verdicts"][judge.name] = verdict
            if judge.decides and verdict.get("decision") is not None:
                record["label"] = verdict["decision"]
    for record in records:
        if record["label"] is None:
            record["label"] = "relevant"
