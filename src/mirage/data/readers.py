"""Readers for VLGuard files (train, test, attack rewrites) and LLaVA conversation files."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirage.data.records import DataError, Sample, load_json_records, require, resolve_image

log = logging.getLogger(__name__)

VLGUARD_SUBSETS = ("unsafes", "safe_unsafes", "safe_safes")
_IMAGE_TAG = re.compile(r"\s*<image>\s*")


def read_vlguard(
    path: str | Path,
    image_root: str | Path | None = None,
    subsets: str | list[str] | tuple[str, ...] = VLGUARD_SUBSETS,
    *,
    check_images: bool = True,
    max_questions: int | None = None,
    seed: int = 0,
    kshot: bool = False,
) -> list[Sample]:
    """Samples of a VLGuard-schema file, limited to ``subsets``.

    Every pair becomes one sample whose ``meta`` records its subset, whether the image is
    safe, the harmful category, and its shot. In a plain file (``kshot=False``) each id appears
    once and every pair is shot 0; a repeated id is an error naming both records. A K-shot file
    (``kshot=True``, as the released ``test_what_3shot.json``) holds K records per id: a record's
    ``shot`` field numbers it when present, else its position among the id's records (0..K-1).
    ``max_questions`` samples ids with ``seed`` and keeps all shots of a chosen id together.
    """
    path = Path(path)
    subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
    unknown = set(subsets) - set(VLGUARD_SUBSETS)
    if unknown:
        raise ValueError(f"unknown VLGuard subset(s) {sorted(unknown)} for {path}; known: {VLGUARD_SUBSETS}")
    root = Path(image_root) if image_root is not None else path.parent
    samples: list[Sample] = []
    shots: Counter[str] = Counter()
    first_index: dict[str, int] = {}
    seen_shots: set[tuple[str, int]] = set()
    skipped: Counter[str] = Counter()
    for index, record in enumerate(load_json_records(path)):
        record_id = str(require(record, "id", (str, int), path, index))
        if not kshot and record_id in first_index:
            raise DataError(
                path,
                f"id {record_id!r} repeats record {first_index[record_id]}; a plain benchmark asks each "
                "question once (K-shot rewrite files are read with kshot=true, e.g. by attack=from_file)",
                index=index,
                record_id=record_id,
                field="id",
            )
        first_index.setdefault(record_id, index)
        safe = require(record, "safe", bool, path, index)
        image = resolve_image(
            require(record, "image", str, path, index),
            root,
            path,
            index,
            record_id,
            check_exists=check_images,
        )
        pairs = require(record, "instr-resp", list, path, index)
        if not pairs:
            raise DataError(path, "empty list", index=index, record_id=record_id, field="instr-resp")
        shot = shots[record_id]
        shots[record_id] += 1
        if "shot" in record:  # an explicit shot number wins over the record's position
            shot = require(record, "shot", int, path, index)
        if (record_id, shot) in seen_shots:
            raise DataError(path, f"shot {shot} of id {record_id!r} appears twice", index=index, field="shot")
        seen_shots.add((record_id, shot))
        base_meta = {"safe_image": safe, "shot": shot, "source": str(path), "index": index}
        if not safe:
            base_meta["harmful_category"] = record.get("harmful_category")
            base_meta["harmful_subcategory"] = record.get("harmful_subcategory")
        for pair_index, pair in enumerate(pairs):
            field_prefix = f"instr-resp[{pair_index}]"
            if not isinstance(pair, dict):
                raise DataError(
                    path, "expected an object", index=index, record_id=record_id, field=field_prefix
                )
            subset, key = _classify_pair(pair, safe, path, index, record_id, field_prefix)
            if subset not in subsets:
                skipped[subset] += 1
                continue
            answer = pair.get("response")
            if answer is not None and not isinstance(answer, str):
                raise DataError(
                    path,
                    "expected a string",
                    index=index,
                    record_id=record_id,
                    field=f"{field_prefix}.response",
                )
            meta = {**base_meta, "subset": subset}
            if "truth" in pair:  # ground truth of synthetic data, for oracle judges
                meta["truth"] = pair["truth"]
            samples.append(Sample(id=record_id, question=pair[key], answer=answer, image=image, meta=meta))
    if skipped:
        log.info("%s: %d pairs read; left out by subset choice: %s", path, len(samples), dict(skipped))
    if max_questions is not None:
        before = len(samples)
        samples = subsample_questions(samples, max_questions, seed)
        log.info(
            "%s: kept %d of %d pairs (max_questions=%d, seed %d)",
            path,
            len(samples),
            before,
            max_questions,
            seed,
        )
    return samples


def _classify_pair(
    pair: dict, safe: bool, path: Path, index: int, record_id: str, field: str
) -> tuple[str, str]:
    for key, subset in (
        ("instruction", "unsafes"),
        ("safe_instruction", "safe_safes"),
        ("unsafe_instruction", "safe_unsafes"),
    ):
        if key in pair:
            if not isinstance(pair[key], str) or not pair[key].strip():
                raise DataError(
                    path,
                    "expected a non-empty string",
                    index=index,
                    record_id=record_id,
                    field=f"{field}.{key}",
                )
            if subset == "unsafes" and safe:
                # Some files use plain "instruction" on safe images (e.g. rewrites of safe questions).
                return "safe_safes", key
            return subset, key
    raise DataError(
        path,
        "no 'instruction', 'safe_instruction' or 'unsafe_instruction' key",
        index=index,
        record_id=record_id,
        field=field,
    )


def subsample_questions(samples: list[Sample], max_questions: int, seed: int) -> list[Sample]:
    """Keep ``max_questions`` ids chosen with ``seed``; all shots of a kept id stay, in file order."""
    ids = list(dict.fromkeys(s.id for s in samples))
    if max_questions >= len(ids):
        return samples
    keep = set(random.Random(seed).sample(ids, max_questions))
    return [s for s in samples if s.id in keep]


def read_conversations(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    check_images: bool = True,
    answer_in_prompt: bool = False,
    where: dict[str, Any] | None = None,
) -> list[Sample]:
    """Samples of a LLaVA conversation file (``id``, optional ``image``, ``conversations``, optional
    ``alternate``: another answer to the last question, e.g. the refusal beside a harmful answer, read into
    ``Sample.alternate``; when present it must be a non-empty string).

    ``where`` keeps only records whose extra fields match, by dotted path, a value or any of a list of
    values: ``{"truth.unsafe": False, "opener": ["what", "can"]}`` keeps the synthetic world's safe
    requests phrased as questions.

    The last human/gpt exchange is the sample's question and answer; earlier exchanges are
    kept as context in ``meta['history']``. ``answer_in_prompt`` appends the answer to the
    question (RMU acts on representations of the harmful text, not on labels).
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    samples = []
    for index, record in enumerate(load_json_records(path)):
        record_id = str(require(record, "id", (str, int), path, index))
        image_field = record.get("image")
        if image_field is not None and not isinstance(image_field, str):
            raise DataError(path, "expected a string", index=index, record_id=record_id, field="image")
        image = resolve_image(image_field, root, path, index, record_id, check_exists=check_images)
        turns = require(record, "conversations", list, path, index)
        if len(turns) < 2 or len(turns) % 2:
            raise DataError(
                path,
                f"expected human/gpt pairs, got {len(turns)} turns",
                index=index,
                record_id=record_id,
                field="conversations",
            )
        exchanges = []
        for turn_index in range(0, len(turns), 2):
            human, gpt = turns[turn_index], turns[turn_index + 1]
            for offset, (turn, role) in enumerate(((human, "human"), (gpt, "gpt"))):
                turn_field = f"conversations[{turn_index + offset}]"
                if not isinstance(turn, dict) or turn.get("from") != role:
                    raise DataError(
                        path,
                        f"expected a turn from {role!r}",
                        index=index,
                        record_id=record_id,
                        field=f"{turn_field}.from",
                    )
                if not isinstance(turn.get("value"), str) or not turn["value"].strip():
                    raise DataError(
                        path,
                        "expected a non-empty string",
                        index=index,
                        record_id=record_id,
                        field=f"{turn_field}.value",
                    )
            exchanges.append((_IMAGE_TAG.sub(" ", human["value"]).strip(), gpt["value"]))
        question, answer = exchanges[-1]
        if answer_in_prompt:
            question = f"{question}\n{answer}"
        alternate = require(record, "alternate", str, path, index) if "alternate" in record else None
        meta = {"source": str(path), "index": index, "history": exchanges[:-1]}
        meta.update(
            {k: v for k, v in record.items() if k not in ("id", "image", "conversations", "alternate")}
        )
        if where and not _matches(meta, where):
            continue
        samples.append(
            Sample(
                id=record_id, question=question, answer=answer, image=image, meta=meta, alternate=alternate
            )
        )
    return samples


def _matches(meta: dict[str, Any], where: dict[str, Any]) -> bool:
    for path, expected in where.items():
        value: Any = meta
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        # Hydra passes lists as ListConfig: any non-string sequence is a set of allowed values.
        allowed = expected if isinstance(expected, Sequence) and not isinstance(expected, str) else [expected]
        if value not in allowed:
            return False
    return True
