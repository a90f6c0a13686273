"""Where each VLM family keeps its parts, read from ``family/<name>.yaml`` config files.

A family maps Hugging Face ``config.model_type`` values to the module paths of its vision tower,
projector, language model and decoder layers, and names (by ``_target_``) the builders of its tiny
offline models. Everything that freezes, targets LoRA, quantizes or hooks a layer asks this map instead
of guessing from leaf names (``q_proj`` exists in CLIP too).

The families are read on first lookup, never at import, from the ``family/`` folder of: mirage's own
config folder, every folder of the running Hydra app's search path (``hydra.searchpath=[file://...]``),
and every folder added with :func:`add_config_dir`. A new family is one YAML file in any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mirage.utils.config_dirs import hydra_config_dirs, packaged_config_dir

COMPONENTS = ("vision_tower", "projector", "language_model")
_PATH_FIELDS = ("model_types", "vision_tower", "projector", "language_model")


@dataclass(frozen=True)
class FamilySpec:
    """Module-name prefixes of one architecture (as in ``model.named_modules()``), and its tiny builds."""

    name: str
    model_types: tuple[str, ...]
    vision_tower: tuple[str, ...]
    projector: tuple[str, ...]
    language_model: tuple[str, ...]
    # Path of the ModuleList of decoder layers (RMU hooks and steering go here).
    decoder_layers: str
    # model_type -> config of a function ``builder(spec: TinyVLMSpec, out_dir: Path)`` (``_target_``,
    # ``_partial_: true``), instantiated only when a tiny model of that type is built.
    tiny_builders: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # ``processor_class`` a checkpoint of this family may name -> import path of that class, for classes
    # AutoProcessor cannot build here (mirage.models.processors).
    processor_classes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        def plain(value: Any) -> Any:
            return (
                OmegaConf.to_container(value, resolve=True)
                if isinstance(value, DictConfig | ListConfig)
                else value
            )

        for name in _PATH_FIELDS:  # a single path may be written as a string
            value = plain(getattr(self, name))
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, "tiny_builders", dict(plain(self.tiny_builders) or {}))
        object.__setattr__(self, "processor_classes", dict(plain(self.processor_classes) or {}))
        for name in ("model_types", "vision_tower", "projector", "language_model"):
            if not getattr(self, name) or not all(isinstance(p, str) and p for p in getattr(self, name)):
                raise ValueError(f"family {self.name!r}: {name} must be a non-empty list of names")
        strays = sorted(set(self.tiny_builders) - set(self.model_types))
        if strays:
            raise ValueError(
                f"family {self.name!r}: tiny_builders {strays} are not among its model_types "
                f"{list(self.model_types)}"
            )

    def quantization_skip(self) -> list[str]:
        """Full module names bitsandbytes must leave in full precision: the vision side and the head.
        (transformers matches skip names from the start of the full name, or as a suffix.)"""
        return [*self.vision_tower, *self.projector, "lm_head"]

    def prefixes(self, component: str) -> tuple[str, ...]:
        if component not in COMPONENTS:
            raise KeyError(f"unknown component {component!r}; expected one of {COMPONENTS}")
        return getattr(self, component)

    def component_of(self, name: str) -> str | None:
        """The component a parameter or module belongs to; the longest matching prefix wins,
        so a projector nested inside the vision module (Qwen2-VL's merger) counts as projector."""
        best, best_len = None, -1
        for component in COMPONENTS:
            for prefix in self.prefixes(component):
                if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = component, len(prefix)
        return best


# --- the registry, read from config folders ---------------------------------------------------
_added_dirs: list[Path] = []
# Keyed by every family file's path, modification time and size: an edited or added file is re-read.
_loaded: dict[tuple[tuple[str, int, int], ...], dict[str, tuple[FamilySpec, Path]]] = {}


def add_config_dir(config_dir: str | Path) -> None:
    """Read families also from ``<config_dir>/family/*.yaml`` (a config folder, as for hydra.searchpath)."""
    folder = Path(config_dir).resolve()
    if not (folder / "family").is_dir():
        raise FileNotFoundError(f"{folder / 'family'}: no such folder (a family config folder holds family/)")
    if folder not in _added_dirs:
        _added_dirs.append(folder)


def remove_config_dir(config_dir: str | Path) -> None:
    """Undo :func:`add_config_dir`."""
    folder = Path(config_dir).resolve()
    if folder in _added_dirs:
        _added_dirs.remove(folder)


def family_files() -> list[Path]:
    """Every ``family/*.yaml``, in search order: mirage's configs, the Hydra search path, added folders."""
    files: list[Path] = []
    folders = [packaged_config_dir(), *hydra_config_dirs(), *_added_dirs]
    for folder in dict.fromkeys(f.resolve() for f in folders):
        files += sorted((folder / "family").glob("*.yaml"))
    return files


def _read_family(path: Path) -> FamilySpec:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
        # Not recursive: the tiny builders stay configs until a tiny model is built.
        spec = instantiate(cfg, _recursive_=False)
    except Exception as err:
        # Hydra wraps what the constructor raised; that is the message worth showing.
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        raise ValueError(f"{path}: not a valid family config: {cause}") from err
    if not isinstance(spec, FamilySpec):
        raise ValueError(
            f"{path}: _target_ must be mirage.models.families.FamilySpec, got {type(spec).__name__}"
        )
    if spec.name != path.stem:
        raise ValueError(f"{path}: field 'name' is {spec.name!r}; it must be the file's name, {path.stem!r}")
    return spec


def _registry() -> dict[str, tuple[FamilySpec, Path]]:
    """model_type -> (family, its file), read again whenever the set of family files changes."""
    files = family_files()
    stats = [f.stat() for f in files]
    key = tuple((str(f), st.st_mtime_ns, st.st_size) for f, st in zip(files, stats, strict=True))
    if key not in _loaded:
        by_name: dict[str, Path] = {}
        by_type: dict[str, tuple[FamilySpec, Path]] = {}
        for path in files:
            first = by_name.get(path.stem)
            if first is not None:  # a copy of the same file (e.g. a copied config folder) is harmless
                if first.read_bytes() != path.read_bytes():
                    raise ValueError(
                        f"family {path.stem!r} is defined twice, differently: {first} and {path}"
                    )
                continue
            by_name[path.stem] = path
            spec = _read_family(path)
            for model_type in spec.model_types:
                if model_type in by_type:
                    raise ValueError(
                        f"model_type {model_type!r} is claimed by two families: "
                        f"{by_type[model_type][1]} and {path}"
                    )
                by_type[model_type] = (spec, path)
        _loaded.clear()  # only the current set of files is worth keeping
        _loaded[key] = by_type
    return _loaded[key]


def known_model_types() -> list[str]:
    return sorted(_registry())


def families() -> dict[str, FamilySpec]:
    """Every known family by name."""
    return {spec.name: spec for spec, _ in _registry().values()}


def family_for_model_type(model_type: str) -> FamilySpec:
    try:
        return _registry()[model_type][0]
    except KeyError:
        raise KeyError(
            f"model_type {model_type!r} has no mirage family; known: {', '.join(known_model_types())}. "
            "Add one as family/<name>.yaml in mirage's configs or a folder on hydra.searchpath "
            "(mirage.models.families.add_config_dir outside Hydra)."
        ) from None


def tiny_model_types() -> list[str]:
    """The model types (``TinyVLMSpec.family`` values) some family can build tiny."""
    return sorted(t for spec in families().values() for t in spec.tiny_builders)


def tiny_builder(model_type: str) -> Callable[..., None]:
    """The function that writes a tiny checkpoint of ``model_type``, ``builder(spec, out_dir)``."""
    from hydra.utils import instantiate

    entry = _registry().get(model_type)
    if entry is None or model_type not in entry[0].tiny_builders:
        raise KeyError(f"no tiny builder for family {model_type!r}; known: {tiny_model_types()}")
    spec, path = entry
    try:
        return instantiate(spec.tiny_builders[model_type])
    except Exception as err:
        raise ValueError(f"{path}: field 'tiny_builders.{model_type}' does not instantiate: {err}") from err


def processor_class(class_name: str) -> type | None:
    """The class a family names for ``processor_class`` ``class_name``; None when no family names it."""
    from hydra.utils import get_class

    for spec, path in _registry().values():
        if class_name in spec.processor_classes:
            try:
                return get_class(spec.processor_classes[class_name])
            except Exception as err:
                raise ValueError(
                    f"{path}: field 'processor_classes.{class_name}' is not importable: {err}"
                ) from err
    return None


def family_of(model: nn.Module) -> FamilySpec:
    """The family of a (possibly peft-wrapped) Hugging Face model."""
    base = unwrap_peft(model)
    return family_for_model_type(base.config.model_type)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    return unwrap_peft(model).get_submodule(path)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, for any known family."""
    layers = get_submodule(model, family_of(model).decoder_layers)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{family_of(model).decoder_layers} is {type(layers).__name__}, not a ModuleList")
    return layers
