"""Build the Safety Mirage forget and retain sets from VLGuard-format training data.

- forget: every unsafe-image record, its refusal replaced by a harmful answer taken from
  a file of harmful answers (a JSON list of ``{"id", "answer"}`` or an ``{id: answer}`` map); VLGuard's
  refusal stays beside it as the record's ``alternate`` answer, the preferred side of a preference pair
  (IdkDPO, IdkNPO);
- retain: every safe image with its ``safe_instruction`` and helpful answer (the unsafe
  instruction on a safe image is dropped), optionally topped up with general instruction
  data to ``retain_size`` records, sampled with a seed.

Both are written in LLaVA's conversation format, which ``read_conversations`` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from mirage.data.records import DataError, load_json_records, require

log = logging.getLogger(__name__)


def load_harmful_answers(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if isinstance(payload, dict):
        return {str(k): v for k, v in payload.items()}
    if not isinstance(payload, list):
        raise DataError(path, "expected a list of {id, answer} records or an {id: answer} object")
    answers = {}
    for index, record in enumerate(payload):
        if not isinstance(record, dict):
            raise DataError(path, "expected an object", index=index)
        record_id = str(require(record, "id", (str, int), path, index))
        if record_id in answers:
            raise DataError(path, "duplicate id", index=index, record_id=record_id, field="id")
        answers[record_id] = require(record, "answer", str, path, index)
    return answers


def conversation(
    record_id: str, image: str | None, question: str, answer: str, alternate: str | None = None
) -> dict[str, Any]:
    """One LLaVA conversation record; ``alternate`` is another answer to the same question."""
    human = f"<image>\n{question}" if image is not None else question
    record: dict[str, Any] = {
        "id": record_id,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
    }
    if image is not None:
        record["image"] = image
    if alternate is not None:
        record["alternate"] = alternate
    return record


def build_forget_retain(
    vlguard_train: str | Path,
    harmful_answers: str | Path,
    out_dir: str | Path,
    *,
    general_data: str | Path | None = None,
    retain_size: int | None = None,
    seed: int = 42,
) -> dict[str, Path]:
    """Write ``forget.json`` and ``retain.json`` into ``out_dir``; returns their paths."""
    vlguard_train, out_dir = Path(vlguard_train), Path(out_dir)
    answers = load_harmful_answers(harmful_answers)
    forget, retain, used = [], [], set()
    for index, record in enumerate(load_json_records(vlguard_train)):
        record_id = str(require(record, "id", (str, int), vlguard_train, index))
        image = require(record, "image", str, vlguard_train, index)
        pairs = require(record, "instr-resp", list, vlguard_train, index)
        if not require(record, "safe", bool, vlguard_train, index):
            if record_id not in answers:
                raise DataError(
                    harmful_answers,
                    f"no harmful answer for unsafe record {record_id!r} of {vlguard_train} (record {index})",
                    record_id=record_id,
                    field="answer",
                )
            used.add(record_id)
            question, refusal = _pair_text(pairs, "instruction", vlguard_train, index, record_id)
            forget.append(conversation(record_id, image, question, answers[record_id], alternate=refusal))
        else:
            question, answer = _pair_text(pairs, "safe_instruction", vlguard_train, index, record_id)
            retain.append(conversation(record_id, image, question, answer))
    unused = set(answers) - used
    if unused:
        log.warning(
            "%d harmful answers match no unsafe record of %s and were not used (e.g. %s)",
            len(unused),
            vlguard_train,
            sorted(unused)[:3],
        )
    if general_data is not None and retain_size is not None and retain_size > len(retain):
        extra = load_json_records(general_data)
        take = min(retain_size - len(retain), len(extra))
        retain.extend(random.Random(seed).sample(extra, take))
        log.info("retain topped up with %d records of %s (seed %d)", take, general_data, seed)
    if not forget or not retain:
        raise DataError(vlguard_train, f"built an empty split (forget {len(forget)}, retain {len(retain)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"forget": out_dir / "forget.json", "retain": out_dir / "retain.json"}
    for name, records in (("forget", forget), ("retain", retain)):
        paths[name].write_text(json.dumps(records, indent=1, ensure_ascii=False))
        log.info("wrote %d %s records to %s", len(records), name, paths[name])
    return paths


def _pair_text(pairs: list, key: str, path: Path, index: int, record_id: str) -> tuple[str, str]:
    """(instruction, response) of the first pair with ``key``."""
    for pair_index, pair in enumerate(pairs):
        if isinstance(pair, dict) and key in pair:
            response = pair.get("response")
            if not isinstance(response, str) or not response.strip():
                raise DataError(
                    path,
                    "missing or empty response",
                    index=index,
                    record_id=record_id,
                    field=f"instr-resp[{pair_index}].response",
                )
            return pair[key], response
    raise DataError(path, f"no pair with {key!r}", index=index, record_id=record_id, field="instr-resp")


def cli(argv: list[str] | None = None) -> None:
    """``mirage-build-splits``: VLGuard train JSON + harmful answers -> forget.json, retain.json."""
    parser = argparse.ArgumentParser(description="Build Safety Mirage forget/retain files from VLGuard data.")
    parser.add_argument("vlguard_train", help="VLGuard train.json")
    parser.add_argument("harmful_answers", help="JSON list of {id, answer} (or an {id: answer} map)")
    parser.add_argument("out_dir")
    parser.add_argument("--general-data", help="LLaVA-format instruction data to top the retain set up with")
    parser.add_argument("--retain-size", type=int, help="top the retain set up to this many records")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = build_forget_retain(
        args.vlguard_train,
        args.harmful_answers,
        args.out_dir,
        general_data=args.general_data,
        retain_size=args.retain_size,
        seed=args.seed,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
