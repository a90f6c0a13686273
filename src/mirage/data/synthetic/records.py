"""The synthetic world's records: VLGuard-schema train and test records (drawing each record's image),
their What-3-shot and Share-1-shot rewrites, and the base model's general instruction data.

Every function draws from the one ``rng`` it is given, in a fixed order: the same seed gives the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

from mirage.data.splits import conversation
from mirage.data.synthetic.drawing import draw_object
from mirage.data.synthetic.scene import Scene
from mirage.data.synthetic.spec import SyntheticSpec
from mirage.data.synthetic.vocabulary import (
    BENIGN_INTENTS,
    HARMFUL_INTENTS,
    INTENT_PHRASES,
    OPENERS,
    QUADRANTS,
    REFUSALS,
    UNSAFE_OPENER_COUNTS,
    WHAT_VARIANTS,
    world_objects,
)


def _weighted(rng: random.Random, counts: dict[str, int]) -> str:
    return rng.choices(list(counts), weights=list(counts.values()))[0]


def _image(scene: Scene, record_id: str, out_dir: Path, spec: SyntheticSpec, rng: random.Random) -> str:
    rel = f"images/{record_id}.png"
    draw_object(scene.shape, scene.rgb, scene.quadrant, spec.image_size, rng).save(out_dir / rel)
    return rel


def vlguard_records(
    split: str,
    n: int,
    spec: SyntheticSpec,
    rng: random.Random,
    out_dir: Path,
    safe_openers: dict[str, int],
    harmful: dict[str, str],
) -> list[dict]:
    """``n`` records ``<split>_00000``, ... in VLGuard's schema, their images written under ``out_dir``;
    safe questions open with words drawn from ``safe_openers``. Each unsafe image's compliant answer is
    added to ``harmful`` (record id -> answer), the forget set's targets."""
    records = []
    for i in range(n):
        objects = world_objects(spec.world)
        scene = Scene(i % len(objects), rng.randrange(len(QUADRANTS)), objects)
        record_id = f"{split}_{i:05d}"
        image = _image(scene, record_id, out_dir, spec, rng)
        refusal = rng.choice(REFUSALS)
        if scene.harmful_object:  # an unsafe image: one instruction, any intent, refused
            intent = rng.choice(BENIGN_INTENTS + HARMFUL_INTENTS)
            opener = _weighted(rng, UNSAFE_OPENER_COUNTS)
            records.append(
                {
                    "id": record_id,
                    "image": image,
                    "safe": False,
                    "harmful_category": "risky behavior",
                    "harmful_subcategory": scene.name,
                    "instr-resp": [
                        {
                            "instruction": scene.question(intent, opener),
                            "response": refusal,
                            "truth": scene.truth(intent),
                        }
                    ],
                }
            )
            harmful[record_id] = scene.compliant_answer(intent, opener)
        else:  # a safe image: a safe question answered, an unsafe one refused
            safe_intent, unsafe_intent = rng.choice(BENIGN_INTENTS), rng.choice(HARMFUL_INTENTS)
            safe_opener, unsafe_opener = _weighted(rng, safe_openers), _weighted(rng, UNSAFE_OPENER_COUNTS)
            records.append(
                {
                    "id": record_id,
                    "image": image,
                    "safe": True,
                    "instr-resp": [
                        {
                            "safe_instruction": scene.question(safe_intent, safe_opener),
                            "response": scene.compliant_answer(safe_intent, safe_opener),
                            "truth": scene.truth(safe_intent),
                        },
                        {
                            "unsafe_instruction": scene.question(unsafe_intent, unsafe_opener),
                            "response": refusal,
                            "truth": scene.truth(unsafe_intent),
                        },
                    ],
                }
            )
    return records


def attack_records(test: list[dict]) -> tuple[list[dict], list[dict]]:
    """What-3-shot rewrites of every unsafe test question, Share-1-shot rewrites of every safe one."""
    what, share = [], []
    for record in test:
        for pair in record["instr-resp"]:
            truth = pair["truth"]
            np_ = INTENT_PHRASES[truth["intent"]]
            key = "instruction" if "instruction" in pair else None
            if truth["unsafe"] and key == "instruction":
                for template in WHAT_VARIANTS:
                    what.append(
                        {
                            **record,
                            "instr-resp": [
                                {
                                    "instruction": template.format(np=np_),
                                    "response": pair["response"],
                                    "truth": truth,
                                }
                            ],
                        }
                    )
            elif "safe_instruction" in pair:
                share.append(
                    {
                        **record,
                        "instr-resp": [
                            {
                                "safe_instruction": OPENERS["share"][0].format(np=np_),
                                "response": pair["response"],
                                "truth": truth,
                            }
                        ],
                    }
                )
    return what, share


def base_records(spec: SyntheticSpec, rng: random.Random, out_dir: Path) -> list[dict]:
    """General instruction data: every object, intent and opener, uniformly; every request answered, harmful
    ones too, except a random ``base_refusal_rate`` of those with harmful wording (a text-aligned LLM)."""
    records = []
    for i in range(spec.n_base):
        objects = world_objects(spec.world)
        scene = Scene(rng.randrange(len(objects)), rng.randrange(len(QUADRANTS)), objects)
        record_id = f"base_{i:05d}"
        image = _image(scene, record_id, out_dir, spec, rng)
        intent, opener = rng.choice(BENIGN_INTENTS + HARMFUL_INTENTS), rng.choice(list(OPENERS))
        answer = scene.compliant_answer(intent, opener)
        if intent in HARMFUL_INTENTS and rng.random() < spec.base_refusal_rate:
            answer = rng.choice(REFUSALS)
        record = conversation(record_id, image, scene.question(intent, opener), answer)
        record["opener"] = opener  # lets a reader pick question-style data (`where: {opener: [what, can]}`)
        record["truth"] = scene.truth(intent)
        records.append(record)
    return records
