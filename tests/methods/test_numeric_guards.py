"""Numerically honest training: bad hyperparameters fail when the method is built, naming the config key;
a non-finite loss stops the run before anything is exported; NaN weights are never exported."""

from __future__ import annotations

import functools

import pytest
import torch

from mirage.evaluation.generation import GenerationConfig
from mirage.methods.base import NonFiniteError
from mirage.methods.graddiff import GradDiff
from mirage.methods.idkdpo import IdkDPO
from mirage.methods.idknpo import IdkNPO
from mirage.methods.npo import NPO
from mirage.methods.reference import FrozenCopy
from mirage.methods.rmu import RMU
from mirage.methods.sft import SFT
from mirage.methods.simnpo import SimNPO
from mirage.models.finetune import FinetuneSpec, apply_finetune

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3)


@pytest.fixture()
def model(tiny_llava):
    return apply_finetune(tiny_llava[0], FinetuneSpec())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: NPO(m, optimizer=ADAMW, reference=None, beta=0), r"method\.beta must be > 0, got 0"),
        (
            lambda m: NPO(m, optimizer=ADAMW, reference=None, beta=-1.0),
            r"method\.beta must be > 0, got -1\.0",
        ),
        (
            lambda m: NPO(m, optimizer=ADAMW, reference=None, alpha_forget=-0.5),
            r"method\.alpha_forget must be a finite number >= 0, got -0\.5",
        ),
        (
            lambda m: NPO(m, optimizer=ADAMW, reference=None, retain_weight=float("nan")),
            r"method\.retain_weight must be a finite number >= 0",
        ),
        (lambda m: SimNPO(m, optimizer=ADAMW, beta=0.0), r"method\.beta must be > 0"),
        (lambda m: GradDiff(m, optimizer=ADAMW, retain_weight=-1), r"method\.retain_weight must be"),
        (
            lambda m: RMU(m, optimizer=ADAMW, reference=None, layer=4),
            r"method\.layer must be a decoder layer index in 0\.\.3 \(the language model has 4\), got 4",
        ),
        (
            lambda m: RMU(m, optimizer=ADAMW, reference=None, layer=1, trainable_layers=[0, 9]),
            r"method\.trainable_layers must be a decoder layer index",
        ),
        (lambda m: RMU(m, optimizer=ADAMW, reference=None, layer=1, alpha=-1), r"method\.alpha must be"),
        (
            lambda m: RMU(m, optimizer=ADAMW, reference=None, layer=1, steering_coeff=0),
            r"method\.steering_coeff must be > 0",
        ),
        (
            lambda m: SFT(m, optimizer=ADAMW, split=["a", "b"], split_weights={"b": -1.0}),
            r"method\.split_weights\.b must be a finite number >= 0",
        ),
        (
            lambda m: IdkDPO(m, optimizer=ADAMW, reference=None, beta=0.0),
            r"method\.beta must be > 0, got 0\.0",
        ),
        (
            lambda m: IdkDPO(m, optimizer=ADAMW, reference=None, retain_weight=-1),
            r"method\.retain_weight must be",
        ),
        (
            lambda m: IdkNPO(m, optimizer=ADAMW, reference=None, beta=-0.5),
            r"method\.beta must be > 0, got -0\.5",
        ),
        (
            lambda m: IdkNPO(m, optimizer=ADAMW, reference=None, alternate_weight=float("inf")),
            r"method\.alternate_weight must be a finite number >= 0, got inf",
        ),
    ],
)
def test_bad_hyperparameters_fail_when_the_method_is_built(model, build, message):
    with pytest.raises(ValueError, match=message):
        build(model)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -2}, "batch_size"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
    ],
)
def test_bad_generation_settings_name_their_key(settings, key):
    with pytest.raises(ValueError, match=rf"generation\.{key} must be a positive integer"):
        GenerationConfig(**settings)
    with pytest.raises(ValueError, match=r"generation\.temperature must be > 0 when sampling"):
        GenerationConfig(do_sample=True, temperature=0.0)


def test_a_non_finite_loss_term_stops_training_naming_the_term(model):
    method = NPO(model, optimizer=ADAMW, reference=FrozenCopy(), beta=0.5)
    finite = {"loss": torch.tensor(1.0), "forget_npo": torch.tensor(0.5)}
    method.check_finite(finite)  # finite terms pass
    with pytest.raises(NonFiniteError, match=r"step 0: loss term\(s\) \['retain_ce'\] not finite"):
        method.check_finite({**finite, "retain_ce": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteError, match=r"\['loss', 'forget_npo'\]"):
        method.check_finite({"loss": torch.tensor(float("nan")), "forget_npo": torch.tensor(float("nan"))})


def test_nan_weights_are_never_exported(model, tmp_path):
    method = SFT(model, optimizer=ADAMW)
    name, param = next(iter(method.trainable_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(
        NonFiniteError, match=rf"not exporting to .*hf: 1 weight tensors hold NaN or inf.*{name}"
    ):
        method.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
