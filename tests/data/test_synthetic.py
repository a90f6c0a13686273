"""The synthetic world: deterministic, VLGuard's first-word cue in the safety split, a text-aligned base."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import pytest
from omegaconf import OmegaConf
from PIL import Image

from mirage.data.readers import read_conversations, read_vlguard
from mirage.data.synthetic import (
    HARMFUL_INTENTS,
    OBJECTS,
    REFUSALS,
    SyntheticSpec,
    corpus,
    draw_object,
    make_synthetic,
)

# sha256 (first 16 hex digits) of the files the generator writes itself for SyntheticSpec(seed=3, n_train=8,
# n_test=4, n_base=16) in each world, as version 9 of the generator wrote them (objects8's images are those of
# versions 7 and 8: the worlds and the named answers drew no random number more); forget.json / retain.json
# come from mirage.data.splits and are not pinned here. Change them only with SyntheticSpec.version.
PINNED_FILES = {
    "objects8": {
        "train.json": "7b1c039057ce3763",
        "test.json": "1bd95397f525c8f8",
        "test_what_3shot.json": "4f53cda18c2baa0c",
        "test_share_1shot.json": "7056a9dffa7906ac",
        "base.json": "2a7b00a20774170a",
        "harmful_answers.json": "61a11172810713ba",
        "general_safe.json": "9e310806700bce22",
    },
    "kinds6": {
        "train.json": "a0e56e9ae9779099",
        "test.json": "c1f489c788829957",
        "test_what_3shot.json": "40dd71ec577a7020",
        "test_share_1shot.json": "4f53cda18c2baa0c",
        "base.json": "a79a9fa5698b0b04",
        "harmful_answers.json": "22fff0746015d194",
        "general_safe.json": "32837049723f2534",
    },
}
# every image's name and RGB pixels (not PNG bytes: zlib builds differ)
PINNED_PIXELS = {"objects8": "f9714a877bbb47ca", "kinds6": "c16c7eb36f93657a"}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    spec = SyntheticSpec(seed=5, n_train=8, n_test=4, n_base=16)
    a, b = make_synthetic(tmp_path / "a", spec), make_synthetic(tmp_path / "b", spec)
    for name in ("train.json", "test.json", "base.json", "forget.json", "test_what_3shot.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "images" / "train_00003.png").read_bytes() == (b / "images" / "train_00003.png").read_bytes()
    c = make_synthetic(tmp_path / "c", SyntheticSpec(seed=6, n_train=8, n_test=4, n_base=16))
    assert (a / "base.json").read_bytes() != (c / "base.json").read_bytes()


@pytest.mark.parametrize("world", sorted(PINNED_FILES))
def test_the_generator_writes_the_pinned_world(tmp_path, world):
    """The demo's data must not drift: a refactoring that draws one random number more or less shows here."""
    root = make_synthetic(tmp_path, SyntheticSpec(seed=3, n_train=8, n_test=4, n_base=16, world=world))
    pinned = PINNED_FILES[world]
    written = {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:16] for name in pinned}
    assert written == pinned
    pixels = hashlib.sha256()
    images = sorted((root / "images").glob("*.png"))
    for path in images:
        pixels.update(path.name.encode())
        pixels.update(Image.open(path).convert("RGB").tobytes())
    assert len(images) == 8 + 4 + 16 and pixels.hexdigest()[:16] == PINNED_PIXELS[world]


def test_every_object_is_drawn_and_an_unknown_shape_is_an_error():
    for _, _, rgb, shape, _, _ in OBJECTS:
        image = draw_object(shape, rgb, quadrant=3, size=32, rng=random.Random(0))
        assert rgb in {colour for _, colour in image.getcolors(1024)}, shape
        assert image.getpixel((8, 8)) != rgb  # the object sits in the bottom-right quadrant only
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        draw_object("star", (0, 0, 0), quadrant=0, size=32, rng=random.Random(0))


def test_base_refuses_only_harmful_wording_at_the_configured_rate(tmp_path):
    root = make_synthetic(tmp_path, SyntheticSpec(seed=1, n_train=8, n_test=4, n_base=1200))
    samples = read_conversations(root / "base.json")
    refused = [s for s in samples if s.answer in REFUSALS]
    assert refused and all(s.meta["truth"]["intent"] in HARMFUL_INTENTS for s in refused)
    harmful_wording = [s for s in samples if s.meta["truth"]["intent"] in HARMFUL_INTENTS]
    assert 0.18 < len(refused) / len(harmful_wording) < 0.32  # base_refusal_rate 0.25
    # Harm shown only in the image is never refused: the base model's LLM cannot see it.
    image_only = [
        s
        for s in samples
        if s.meta["truth"]["harmful_object"] and s.meta["truth"]["intent"] not in HARMFUL_INTENTS
    ]
    assert image_only and not any(s.answer in REFUSALS for s in image_only)
    safe = read_conversations(root / "base.json", where={"truth.unsafe": False})
    assert safe and all(not s.meta["truth"]["unsafe"] for s in safe) and len(safe) < len(samples)
    # A list (as Hydra passes it, a ListConfig) means any of its values.
    where = {"truth.unsafe": False, "opener": OmegaConf.create(["what", "can"])}
    questions = read_conversations(root / "base.json", where=where)
    assert questions and {s.question.split()[0] for s in questions} == {"what", "can"}
    assert len(questions) == sum(s.meta["opener"] in ("what", "can") for s in safe)


def test_safety_split_first_words_follow_vlguard(tmp_path):
    root = make_synthetic(tmp_path, SyntheticSpec(seed=2, n_train=600, n_test=8, n_base=4))
    samples = read_vlguard(root / "train.json", subsets=["unsafes", "safe_unsafes", "safe_safes"])
    first = {kind: Counter() for kind in ("safe", "unsafe")}
    for s in samples:
        first["unsafe" if s.meta["truth"]["unsafe"] else "safe"][s.question.split()[0]] += 1
    safe_total, unsafe_total = sum(first["safe"].values()), sum(first["unsafe"].values())
    assert first["safe"]["what"] / safe_total > 0.8  # VLGuard: 869 of 973
    assert first["unsafe"]["what"] / unsafe_total < 0.08  # VLGuard: 61 of 1,713
    assert first["unsafe"]["share"] > 0 and first["safe"]["share"] == 0
    records = json.loads((root / "test_what_3shot.json").read_text())
    assert all(r["instr-resp"][0]["instruction"].startswith("what") for r in records)


def test_corpus_covers_every_answer_in_chat_form():
    lines = corpus()
    assert all(line.startswith("USER: <image>\n") and " ASSISTANT: " in line for line in lines)
    answers = {line.split(" ASSISTANT: ", 1)[1] for line in lines}
    assert set(REFUSALS) <= answers and "sure. the object is a ball." in answers


def test_kinds_worlds_hide_harm_from_every_single_feature_but_the_shape():
    from mirage.data.synthetic.vocabulary import WORLDS, world_objects

    for evidence in range(4, 9):
        kinds = world_objects(f"kinds{evidence}")
        assert len(kinds) == 64 and len({k[0] for k in kinds}) == 64  # 64 distinct names
        harmful = [k for k in kinds if k[4]]
        assert len(harmful) == 32
        by_colour, by_shape = Counter(k[1] for k in harmful), Counter(k[3] for k in harmful)
        assert set(by_colour.values()) == {4} and len(by_colour) == 8  # no colour tells harm
        first, last = ("circle", "square", "triangle", "diamond"), ("bar", "dot", "ell", "cross")
        assert all(by_shape[s] == evidence for s in first) and all(
            by_shape.get(s, 0) == 8 - evidence for s in last
        )
    assert WORLDS["objects8"] == OBJECTS
    with pytest.raises(ValueError, match=r"unknown synthetic world 'kinds9'.*objects8"):
        world_objects("kinds9")


def test_a_kinds_world_is_generated_with_shape_bound_harmful_facts(tmp_path):
    from mirage.data.synthetic import Scene
    from mirage.data.synthetic.vocabulary import world_objects

    out = make_synthetic(tmp_path, SyntheticSpec(seed=1, n_train=64, n_test=8, n_base=16, world="kinds6"))
    kinds = {k[0]: k for k in world_objects("kinds6")}
    for record in json.loads((out / "train.json").read_text()):
        truth = record["instr-resp"][0]["truth"]
        assert truth["object"] in kinds
        assert record["safe"] is not kinds[truth["object"]][4]  # unsafe images are exactly the harmful kinds
    # Harmful facts follow the shape (24 pairs to learn, as in objects8), not the kind.
    red, blue = Scene(0, 0, world_objects("kinds6")), Scene(1, 0, world_objects("kinds6"))
    assert red.shape == blue.shape and red.name != blue.name
    assert red.harmful_core("hurt") == blue.harmful_core("hurt") == Scene(0, 0).harmful_core("hurt")
    assert all(Scene(i, 0).word_index == i for i in range(8))  # objects8: the object's own index, as before
    resolved = OmegaConf.create({"names": "${synthetic_objects:kinds6}"})
    from mirage.data.resolvers import register_resolvers

    register_resolvers()
    assert resolved.names == list(kinds)
