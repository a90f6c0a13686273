"""The evaluation run: model -> per case (benchmark -> attack -> generation -> judges -> metrics) -> files.

Each case (:mod:`mirage.evaluation.cases`) writes into ``<run dir>/<case>/``: ``generations.jsonl``
(appended as answers come, so a killed run resumes), ``judged.jsonl`` (every judge's verdict and the final
label) and ``metrics.json``; ``<run dir>/metrics.json`` gathers all cases.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.utils import distributed as dist

log = logging.getLogger(__name__)


def run_case(
    name: str,
    case: DictConfig,
    model: Any,
    processor: Any,
    judges: list,
    out_dir: Path,
    judge_cache_dir: Path,
) -> dict[str, Any]:
    """Generate (resuming), judge (cached) and score one resolved case (``resolve_cases``)."""
    from mirage.evaluation.chain import judge_records
    from mirage.evaluation.generation import generate
    from mirage.evaluation.metrics import summarize
    from mirage.evaluation.results import JsonlAppender, read_jsonl, record_key
    from mirage.utils.io import write_json

    gen_config = generation_config(case)
    samples = instantiate(case.benchmark)()
    if not samples:  # e.g. a subset filter that keeps nothing (an empty file fails in the reader)
        raise ValueError(f"case {name}: the benchmark produced no samples")
    attack = instantiate(case.attack)
    attacked = attack.apply(samples)
    case_dir = out_dir / name
    generations = case_dir / "generations.jsonl"
    done = {r["key"]: r for r in read_jsonl(generations)}
    keys = [record_key(s) for s in attacked]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"case {name}: duplicate (id, subset, attack, shot) keys; the benchmark repeats records"
        )
    todo = [s for s, k in zip(attacked, keys, strict=True) if k not in done]
    dist.barrier()  # every rank has read what is on disk before rank 0 appends to it
    log.info(
        "case %s: %d answers (%d already on disk, %d to generate)",
        name,
        len(keys),
        len(keys) - len(todo),
        len(todo),
    )
    writer = JsonlAppender(generations) if dist.is_main() else None

    def save(rows: list[dict[str, Any]]) -> None:
        if writer is not None:  # rank 0 writes every rank's answers
            writer.append(rows)
        done.update({r["key"]: r for r in rows})

    if todo and dist.is_distributed():
        _generate_sharded(model, processor, todo, gen_config, save)
    elif todo:
        generate(
            model,
            processor,
            todo,
            gen_config,
            on_batch=lambda batch, answers: save(
                [make_record(s, a) for s, a in zip(batch, answers, strict=True)]
            ),
            description=f"{name}: generating",
        )
    metrics = None
    if dist.is_main():  # judging and the case's files: rank 0 only; the others get its metrics
        records = [done[k] for k in keys]
        judge_records(records, judges, judge_cache_dir, description=name)
        _write_judged(case_dir / "judged.jsonl", records)
        metrics = summarize(records)
        metrics.update({"case": name, "attack": attack.name, "answers": len(records)})
        write_json(case_dir / "metrics.json", metrics)
    return dist.broadcast_object(metrics)


def _generate_sharded(model: Any, processor: Any, todo: list, gen_config: Any, save: Any) -> None:
    """Each rank answers its round-robin share, one batch per round; after every round the answers are
    gathered and rank 0 appends them, so a killed run resumes from whole rounds. Batched greedy decoding
    gives the same answers as one at a time, so sharding does not change them."""
    from mirage.evaluation.generation import generate_batch

    mine = dist.shard(todo)
    size = gen_config.batch_size
    largest = -(-len(todo) // dist.world_size())  # rank 0's share, the largest
    rounds = -(-largest // size)
    for index in range(rounds):
        batch = mine[index * size : (index + 1) * size]
        answers = generate_batch(model, processor, batch, gen_config) if batch else []
        rows = [make_record(s, a) for s, a in zip(batch, answers, strict=True)]
        gathered = [row for part in dist.gather_objects(rows) for row in part]
        save(gathered)
        log.info("round %d/%d: %d answers from %d ranks", index + 1, rounds, len(gathered), dist.world_size())


def make_record(sample: Any, answer: str) -> dict[str, Any]:
    """One answer as written to ``generations.jsonl`` (what the judges and metrics read)."""
    from mirage.evaluation.results import record_key

    meta = sample.meta
    return {
        "key": record_key(sample),
        "id": sample.id,
        "shot": meta.get("shot", 0),
        "subset": meta.get("subset"),
        "attack": meta.get("attack", "none"),
        "question": sample.question,
        "original_question": meta.get("original_question", sample.question),
        "prefill": meta.get("prefill"),
        "image": str(sample.image) if sample.image else None,
        "harmful_category": meta.get("harmful_category"),
        "reference_answer": sample.answer,
        "answer": answer,
        "truth": meta.get("truth"),  # ground truth for oracle judges, when the benchmark has it
    }


def _write_judged(path: Path, records: list[dict[str, Any]]) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
    os.replace(tmp, path)


def generation_config(case: DictConfig) -> Any:
    """The case's decoding settings, checked (``generation.max_new_tokens > 0``, ...)."""
    from mirage.evaluation.generation import GenerationConfig

    return GenerationConfig(**OmegaConf.to_container(case.generation, resolve=True))


def run_evaluation(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Every case of ``cfg`` -> {case: metrics}; files go to ``cfg.paths.output_dir``. Under
    torch.distributed (``torchrun``, or a DDP training job) generation is sharded across the ranks and
    rank 0 alone writes; every rank returns the same metrics."""
    import lightning.pytorch as L

    from mirage.evaluation.cases import resolve_cases
    from mirage.utils.io import write_json

    cases = resolve_cases(cfg)  # a contradictory config fails here, before any model is loaded
    for case in cases.values():
        generation_config(case)  # so does a bad decoding setting
    dist.init_from_env()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    model, processor = instantiate(cfg.model, _convert_="all")
    _to_rank_device(model)
    if cfg.get("steering") is not None:  # an inference-time hook for the whole run (configs/steering/)
        instantiate(cfg.steering).attach(model, processor)
    judges = [instantiate(j) for j in cfg.judges.values() if j is not None]
    results = {}
    for name, case in cases.items():
        results[name] = run_case(name, case, model, processor, judges, output_dir, Path(cfg.judge_cache_dir))
    if dist.is_main():
        write_json(output_dir / "metrics.json", results)
    return results


def flat_metrics(results: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """``{"<prefix><case>/<metric>": value}`` for every numeric metric (what sweepers and loggers take)."""
    return {
        f"{prefix}{case}/{k}": float(v)
        for case, m in results.items()
        for k, v in m.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _to_rank_device(model: Any) -> None:
    """Under torchrun on GPUs each rank answers on its own GPU (a model left on the CPU is moved there)."""
    import torch

    if dist.is_distributed() and torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model.to(f"cuda:{torch.cuda.current_device()}")
