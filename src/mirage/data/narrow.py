"""Narrow-domain image-text data (reference section 8): one prompt, a safe and a harmful answer.

A file is a JSON list (or JSON Lines) of records::

    {"id": "face_0001", "image_path": "images/face_0001.png", "user_prompt": "...",
     "safe_response": "...", "harmful_response": "...", <any metadata columns>}

``image_path`` may be null or absent: a text-only prompt (the paper's text-only evaluation set).
Metadata columns travel in ``Sample.meta`` (``truth`` is what the oracle judge reads).

``harmful_fraction`` picks which records answer harmfully: exactly ``round(f * n)`` of them,
chosen with ``seed``, so a mixture sweep (0, 0.1, 0.25, 0.5, 1.0) is reproducible and the
harmful subsets of one seed are nested in nothing but their count (each fraction draws anew).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from mirage.data.records import DataError, Sample, load_json_records, require, resolve_image

log = logging.getLogger(__name__)

NARROW_FIELDS = ("id", "image_path", "user_prompt", "safe_response", "harmful_response")
MODALITIES = ("any", "image", "text")


def harmful_indices(n: int, harmful_fraction: float, seed: int) -> set[int]:
    """The ``round(f * n)`` record positions (seeded) that get the harmful answer."""
    if not 0.0 <= harmful_fraction <= 1.0:
        raise ValueError(f"harmful_fraction must lie in [0, 1], got {harmful_fraction}")
    count = int(harmful_fraction * n + 0.5)  # round half up: 0.25 * 10 -> 3 (Python's round gives 2)
    return set(random.Random(seed).sample(range(n), count))


def read_narrow(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    harmful_fraction: float = 1.0,
    seed: int = 0,
    modality: str = "any",
    check_images: bool = True,
    max_samples: int | None = None,
) -> list[Sample]:
    """Samples of a narrow-domain file; the answer is harmful for a seeded ``harmful_fraction`` of records.

    ``modality`` keeps only image-question pairs (``image``), only text-only prompts (``text``) or
    both (``any``). ``max_samples`` keeps the first N records (before mixing). ``meta`` records
    ``harmful`` (which answer was chosen), both answers, ``modality`` and the metadata columns.
    """
    path = Path(path)
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    root = Path(image_root) if image_root is not None else path.parent
    records = load_json_records(path)
    if max_samples is not None:
        records = records[:max_samples]
    parsed, seen = [], {}
    for index, record in enumerate(records):
        record_id = str(require(record, "id", (str, int), path, index))
        if record_id in seen:
            raise DataError(
                path,
                f"duplicate id (first at record {seen[record_id]})",
                index=index,
                record_id=record_id,
                field="id",
            )
        seen[record_id] = index
        image_field = record.get("image_path")
        if image_field is not None and (not isinstance(image_field, str) or not image_field.strip()):
            raise DataError(
                path,
                "expected a non-empty string or null",
                index=index,
                record_id=record_id,
                field="image_path",
            )
        image = resolve_image(
            image_field, root, path, index, record_id, field_name="image_path", check_exists=check_images
        )
        prompt = require(record, "user_prompt", str, path, index)
        safe = require(record, "safe_response", str, path, index)
        harmful = require(record, "harmful_response", str, path, index)
        extra = {k: v for k, v in record.items() if k not in NARROW_FIELDS}
        parsed.append((index, record_id, image, prompt, safe, harmful, extra))
    chosen = harmful_indices(len(parsed), harmful_fraction, seed)
    samples = []
    for position, (index, record_id, image, prompt, safe, harmful, extra) in enumerate(parsed):
        kind = "image" if image is not None else "text"
        if modality not in ("any", kind):
            continue
        is_harmful = position in chosen
        meta = {
            **extra,
            "source": str(path),
            "index": index,
            "modality": kind,
            "harmful": is_harmful,
            "safe_response": safe,
            "harmful_response": harmful,
        }
        samples.append(
            Sample(
                id=record_id, question=prompt, answer=harmful if is_harmful else safe, image=image, meta=meta
            )
        )
    log.info(
        "%s: %d samples (%s), %d with the harmful answer (harmful_fraction=%g, seed %d)",
        path,
        len(samples),
        modality,
        sum(s.meta["harmful"] for s in samples),
        harmful_fraction,
        seed,
    )
    return samples
