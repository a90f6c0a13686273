"""The family registry is read from family/*.yaml config files: mirage's own, the Hydra search path's and
folders added explicitly; bad files are named; models/ imports nothing above it and has no import cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mirage.models.families import (
    FamilySpec,
    add_config_dir,
    family_for_model_type,
    known_model_types,
    remove_config_dir,
    tiny_builder,
    tiny_model_types,
)
from mirage.models.loading import load_processor
from mirage.models.processors import Qwen2VLImageOnlyProcessor
from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

REPO_ROOT = Path(__file__).resolve().parents[2]

# A valid family file whose paths are LLaVA's (a made-up model_type, so nothing else claims it).
TOY = {
    "_target_": "mirage.models.families.FamilySpec",
    "name": "toy",
    "model_types": ["toy_vlm"],
    "vision_tower": ["model.vision_tower"],
    "projector": ["model.multi_modal_projector"],
    "language_model": ["model.language_model", "lm_head"],
    "decoder_layers": "model.language_model.layers",
}


@pytest.fixture
def config_dir(tmp_path: Path):
    """A config folder with an empty family/ folder, added to the registry for the test's duration."""
    (tmp_path / "family").mkdir()
    add_config_dir(tmp_path)
    yield tmp_path
    remove_config_dir(tmp_path)


def _write(config_dir: Path, name: str, fields: dict) -> Path:
    path = config_dir / "family" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def test_the_packaged_families_come_from_their_yaml_files() -> None:
    assert known_model_types() == ["gemma3", "idefics3", "llava", "qwen2_5_vl", "qwen2_vl", "smolvlm"]
    assert tiny_model_types() == ["gemma3", "idefics3", "llava", "qwen2_5_vl", "qwen2_vl"]
    qwen = family_for_model_type("qwen2_5_vl")
    assert family_for_model_type("qwen2_vl") is qwen
    assert (qwen.name, qwen.projector, qwen.decoder_layers) == (
        "qwen2_vl",
        ("model.visual.merger",),
        "model.language_model.layers",
    )
    # The longest prefix wins: the merger inside the vision module is the projector.
    assert qwen.component_of("model.visual.merger.mlp.0.weight") == "projector"
    assert qwen.component_of("model.visual.blocks.0.attn.qkv.weight") == "vision_tower"
    assert family_for_model_type("smolvlm").language_model == ("model.text_model", "lm_head")
    from mirage.models.tiny.qwen2_vl import build_tiny_qwen2_5_vl

    assert tiny_builder("qwen2_5_vl").func is build_tiny_qwen2_5_vl


def test_every_packaged_family_file_is_commented_and_named_after_its_family() -> None:
    for path in sorted((REPO_ROOT / "configs" / "family").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["name"] == path.stem, path
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert "#" in line, f"{path}:{number} has no comment"


def test_an_added_folder_brings_a_family_and_removing_it_takes_it_away(tmp_path: Path) -> None:
    (tmp_path / "family").mkdir()
    _write(tmp_path, "toy", TOY)
    with pytest.raises(KeyError, match=r"model_type 'toy_vlm' has no mirage family; known: gemma3, "):
        family_for_model_type("toy_vlm")
    add_config_dir(tmp_path)
    try:
        toy = family_for_model_type("toy_vlm")
        assert isinstance(toy, FamilySpec) and toy.language_model == ("model.language_model", "lm_head")
        assert "toy_vlm" in known_model_types() and "toy_vlm" not in tiny_model_types()
    finally:
        remove_config_dir(tmp_path)
    assert "toy_vlm" not in known_model_types()


def test_the_hydra_search_path_brings_families_relative_and_packaged_entries_too(
    tmp_path: Path, monkeypatch
) -> None:
    from hydra.core.hydra_config import HydraConfig
    from tests.compose import compose_config

    from mirage.utils.config_dirs import hydra_config_dirs

    (tmp_path / "user" / "family").mkdir(parents=True)
    _write(tmp_path / "user", "toy", TOY)
    monkeypatch.chdir(tmp_path)  # a relative file:// entry is relative to where the app started
    cfg = compose_config(["hydra.searchpath=[file://user,pkg://mirage.models]"], tmp_path, hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        folders = hydra_config_dirs()
        toy = family_for_model_type("toy_vlm")
    finally:
        HydraConfig.instance().cfg = None
    assert folders == [REPO_ROOT / "configs", tmp_path / "user", REPO_ROOT / "src" / "mirage" / "models"]
    assert toy.name == "toy" and "toy_vlm" not in known_model_types()


def test_an_edited_family_file_is_read_again(config_dir: Path) -> None:
    path = _write(config_dir, "toy", TOY)
    assert family_for_model_type("toy_vlm").decoder_layers == "model.language_model.layers"
    _write(
        config_dir,
        "toy",
        {**TOY, "decoder_layers": "model.language_model.blocks", "model_types": ["toy_vlm2"]},
    )
    assert path.exists() and family_for_model_type("toy_vlm2").decoder_layers == "model.language_model.blocks"
    assert "toy_vlm" not in known_model_types()


def test_a_single_path_may_be_a_string(config_dir: Path) -> None:
    _write(config_dir, "toy", {**TOY, "vision_tower": "model.vision_tower", "model_types": "toy_vlm"})
    toy = family_for_model_type("toy_vlm")
    assert toy.vision_tower == ("model.vision_tower",) and toy.model_types == ("toy_vlm",)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("other", TOY, r"other\.yaml: field 'name' is 'toy'; it must be the file's name, 'other'"),
        (
            "toy",
            {k: v for k, v in TOY.items() if k != "decoder_layers"},
            r"toy\.yaml: not a valid family config",
        ),
        ("toy", {**TOY, "colour": "red"}, r"toy\.yaml: not a valid family config.*colour"),
        ("toy", {**TOY, "projector": []}, r"toy\.yaml: .*projector must be a non-empty list"),
        ("toy", {**TOY, "_target_": "builtins.dict"}, r"toy\.yaml: _target_ must be .*FamilySpec, got dict"),
        (
            "toy",
            {**TOY, "tiny_builders": {"llava": {"_target_": "x.y", "_partial_": True}}},
            r"tiny_builders \['llava'\] are not among its model_types \['toy_vlm'\]",
        ),
    ],
)
def test_a_bad_family_file_is_named(config_dir: Path, name: str, fields: dict, message: str) -> None:
    _write(config_dir, name, fields)
    with pytest.raises(ValueError, match=message):
        known_model_types()


def test_a_model_type_claimed_twice_names_both_files(config_dir: Path) -> None:
    _write(config_dir, "toy", {**TOY, "model_types": ["llava"]})
    packaged = REPO_ROOT / "configs" / "family" / "llava.yaml"
    with pytest.raises(ValueError, match="model_type 'llava' is claimed by two families") as err:
        known_model_types()
    assert str(packaged) in str(err.value) and str(config_dir / "family" / "toy.yaml") in str(err.value)


def test_a_family_defined_twice_is_an_error_unless_the_files_are_equal(config_dir: Path) -> None:
    packaged = REPO_ROOT / "configs" / "family" / "gemma3.yaml"
    copy = config_dir / "family" / "gemma3.yaml"
    copy.write_bytes(packaged.read_bytes())  # e.g. a copied config folder: harmless
    assert family_for_model_type("gemma3").name == "gemma3"
    copy.write_text(packaged.read_text().replace("model.vision_tower", "model.vision_model"))
    with pytest.raises(ValueError, match="family 'gemma3' is defined twice, differently") as err:
        family_for_model_type("gemma3")
    assert str(packaged) in str(err.value) and str(copy) in str(err.value)


def test_an_unimportable_tiny_builder_is_named(config_dir: Path, tmp_path: Path) -> None:
    _write(
        config_dir,
        "toy",
        {**TOY, "tiny_builders": {"toy_vlm": {"_target_": "nowhere.build", "_partial_": True}}},
    )
    with pytest.raises(ValueError, match=r"toy\.yaml: field 'tiny_builders\.toy_vlm' does not instantiate"):
        build_tiny_vlm(TinyVLMSpec(family="toy_vlm"), tmp_path / "cache")
    with pytest.raises(KeyError, match=r"no tiny builder for family 'mystery'; known: \['gemma3', "):
        build_tiny_vlm(TinyVLMSpec(family="mystery"), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_adding_a_folder_without_family_configs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"family: no such folder"):
        add_config_dir(tmp_path)


def test_the_qwen_processor_class_is_found_through_the_family_config(tmp_path: Path) -> None:
    # The stock Qwen2VLProcessor needs torchvision; the checkpoint names the image-only class, which
    # configs/family/qwen2_vl.yaml maps to mirage.models.processors (nothing registers with AutoProcessor).
    path = build_tiny_vlm(TinyVLMSpec(family="qwen2_vl"), tmp_path)
    assert '"processor_class": "Qwen2VLImageOnlyProcessor"' in (path / "processor_config.json").read_text()
    processor = load_processor(path)
    assert type(processor) is Qwen2VLImageOnlyProcessor
    assert processor.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_importing_the_loader_reads_no_family_file_and_imports_no_tiny_builder() -> None:
    code = (
        "import sys; import mirage.models.loading, mirage.models.families as f; "
        "print(sorted(m for m in sys.modules if m.startswith('mirage'))); print(len(f._loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    modules, loaded = result.stdout.strip().splitlines()
    assert "mirage.models.tiny" not in modules and "mirage.models.processors" not in modules, modules
    assert not any(
        f"'mirage.{layer}" in modules for layer in ("methods", "evaluation", "analysis", "train", "data")
    )
    assert loaded == "0"  # no registry is read at import


def test_models_import_only_utils_and_have_no_import_cycle() -> None:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("mirage")
    models = {m for m in graph.modules if m == "mirage.models" or m.startswith("mirage.models.")}
    outside = sorted(
        (module, imported)
        for module in models
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("mirage.") and not imported.startswith(("mirage.models", "mirage.utils."))
    )
    assert outside == []
    cycles = sorted(
        (module, imported)
        for module in models
        for imported in graph.find_modules_directly_imported_by(module)
        if imported in models and graph.chain_exists(imported, module)
    )
    assert cycles == []
    # The real-model loader does not reach the tiny builders.
    assert not graph.chain_exists("mirage.models.loading", "mirage.models.tiny", as_packages=True)
    # models/ reaches no utils module that leads back above it.
    used_utils = {
        i for m in models for i in graph.find_modules_directly_imported_by(m) if i.startswith("mirage.utils")
    }
    assert used_utils and not any(
        graph.chain_exists(u, "mirage.models", as_packages=True) for u in used_utils
    )
