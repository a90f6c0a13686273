"""Sharpness-aware unlearning (``method.sam.rho``): every unlearning loss splits into a forget and a retain
part; the SAM step's gradient against the formula computed by hand; weights restored bit for bit; rho = 0
is the plain method; bad settings fail; a short run through the training workflow."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from tests.compose import compose_config
from tests.methods.tiny_runs import datamodule, sgd, tiny_model

from mirage.methods.base import MethodModule
from mirage.methods.graddiff import GradDiff
from mirage.methods.idkdpo import IdkDPO
from mirage.methods.idknpo import IdkNPO
from mirage.methods.losses import answer_cross_entropy, sequence_nll
from mirage.methods.npo import NPO
from mirage.methods.reference import FrozenCopy
from mirage.methods.rmu import RMU
from mirage.methods.sam import SharpnessAware
from mirage.methods.simnpo import SimNPO
from mirage.methods.unlearning import UnlearningMethod
from mirage.models.loading import load_vlm

TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}  # fp32, two code paths: holds on any CPU


def _batches(processor, synthetic_dir):
    """Two forget and two retain batches (4 samples each) of the synthetic world, alternates included."""
    dm = datamodule(processor, synthetic_dir)
    forget, retain = dm.split("forget").samples, dm.split("retain").samples
    return [dm.collate_train(forget[i : i + 4]) for i in (0, 4)], [
        dm.collate_train(retain[i : i + 4]) for i in (0, 4)
    ]


def _perturb(model, scale=0.05):
    """Move the model away from its reference, reproducibly (so every reference term is non-trivial)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


# Each method with non-default weights, and its forget and retain parts written from its logged terms.
METHODS = {
    "npo": (
        lambda m, p: NPO(
            m,
            sgd(0.1),
            processor=p,
            reference=FrozenCopy(),
            alpha_forget=0.7,
            alpha_retain_npo=0.3,
            retain_weight=2.0,
        ),
        lambda t: 0.7 * t["forget_npo"],
        lambda t: 2.0 * t["retain_ce"] + 0.3 * t["retain_npo"],
    ),
    "simnpo": (
        lambda m, p: SimNPO(m, sgd(0.1), processor=p, alpha_forget=0.7, retain_weight=2.0),
        lambda t: 0.7 * t["forget_simnpo"],
        lambda t: 2.0 * t["retain_ce"],
    ),
    "graddiff": (
        lambda m, p: GradDiff(m, sgd(0.1), processor=p, alpha_forget=0.7, retain_weight=2.0),
        lambda t: -0.7 * t["forget_ce"],
        lambda t: 2.0 * t["retain_ce"],
    ),
    "rmu": (
        lambda m, p: RMU(
            m, sgd(0.1), processor=p, reference=FrozenCopy(), layer=1, alpha=5.0, retain_weight=2.0
        ),
        lambda t: t["forget_mse"],
        lambda t: 5.0 * t["retain_mse"] + 2.0 * t["retain_ce"],
    ),
    "idkdpo": (
        lambda m, p: IdkDPO(m, sgd(0.1), processor=p, reference=FrozenCopy(), beta=0.5, retain_weight=2.0),
        lambda t: t["forget_dpo"],
        lambda t: 2.0 * t["retain_ce"],
    ),
    "idknpo": (
        lambda m, p: IdkNPO(
            m, sgd(0.1), processor=p, reference=FrozenCopy(), alternate_weight=0.3, retain_weight=2.0
        ),
        lambda t: t["forget_npo"] + 0.3 * t["alternate_ce"],
        lambda t: 2.0 * t["retain_ce"],
    ),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_splits_into_a_forget_part_and_a_retain_part(name, tiny_llava_dir, synthetic_dir):
    build, forget_part, retain_part = METHODS[name]
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    method = build(model, processor)
    _perturb(method.model)
    (f1, f2), (r1, r2) = _batches(processor, synthetic_dir)
    with torch.no_grad():
        base = method.compute_loss({"forget": f1, "retain": r1})
        other_forget = method.compute_loss({"forget": f2, "retain": r1})
        other_retain = method.compute_loss({"forget": f1, "retain": r2})
    values = {k: v.item() for k, v in base.items()}
    assert values["forget_loss"] == pytest.approx(forget_part(values), rel=1e-6)
    assert values["loss"] - values["forget_loss"] == pytest.approx(retain_part(values), rel=1e-5)
    assert values["retain_loss"] == pytest.approx(retain_part(values), rel=1e-6)
    # The forget part reads the forget batch alone, the retain part the retain batch alone.
    assert torch.equal(base["forget_loss"], other_retain["forget_loss"])
    assert torch.equal(base["retain_loss"], other_forget["retain_loss"])
    assert base["forget_loss"] != other_forget["forget_loss"]
    assert base["retain_loss"] != other_retain["retain_loss"]


# --- the SAM step against the formula -----------------------------------------------------------------


def _graddiff_parts(model, batch):
    """GradDiff's two parts (alpha 0.7, lambda 2), written from the formula on the plain HF model."""

    def ce(split):
        logits = model(**MethodModule.model_inputs(batch[split])).logits
        return answer_cross_entropy(logits, batch[split]["labels"])

    return lambda: -0.7 * ce("forget"), lambda: 2.0 * ce("retain")


def _npo_parts(model, reference, batch, beta=0.5, alpha=0.7):
    """NPO's two parts (token-mean d, lambda 1), from the formula with a pristine reference copy."""

    def nll(net, split):
        return sequence_nll(net(**MethodModule.model_inputs(batch[split])).logits, batch[split]["labels"])

    with torch.no_grad():
        ref_nll, ref_count = nll(reference, "forget")

    def forget():
        seq_nll, count = nll(model, "forget")
        d = seq_nll.sum() / count.sum() - ref_nll.sum() / ref_count.sum()
        return -alpha * (2 / beta) * torch.nn.functional.logsigmoid(beta * d)

    def retain():
        seq_nll, count = nll(model, "retain")
        return seq_nll.sum() / count.sum()

    return forget, retain


def _by_hand(params, forget, retain, rho):
    """grad L_f(theta + rho g/||g||) + grad L_r(theta), g = grad L_f(theta): perturbation in float64."""

    def grads(loss):
        found = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]

    g = grads(forget())
    norm = math.sqrt(sum(float(x.double().pow(2).sum()) for x in g))
    originals = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, g, strict=True):
            p.copy_((p.double() + rho * x.double() / norm).to(p.dtype))
    perturbed_loss = forget()
    g_perturbed = grads(perturbed_loss)
    with torch.no_grad():
        for p, original in zip(params, originals, strict=True):
            p.copy_(original)
    g_retain = grads(retain())
    sam = [a + b for a, b in zip(g_perturbed, g_retain, strict=True)]
    plain = [a + b for a, b in zip(g, g_retain, strict=True)]
    return sam, plain, norm, perturbed_loss.item()


@pytest.mark.parametrize("case", ["graddiff-full", "npo-lora"])
def test_sam_gradient_equals_the_formula_by_hand(case, tiny_llava_dir, synthetic_dir):
    rho = 0.05
    model, processor = tiny_model(tiny_llava_dir, lora=case.endswith("lora"))
    if case.startswith("graddiff"):
        method = GradDiff(model, sgd(0.1), processor=processor, alpha_forget=0.7, retain_weight=2.0)
    else:
        method = NPO(model, sgd(0.1), processor=processor, reference=FrozenCopy(), beta=0.5, alpha_forget=0.7)
    method.sam = SharpnessAware(rho)
    (forget, _), (retain, _) = _batches(processor, synthetic_dir)
    batch = {"forget": forget, "retain": retain}
    params = [p for _, p in method.trainable_parameters()]

    loss = method.training_step(batch, 0)
    loss.backward()
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    terms = method.step_terms(batch)  # the logged terms (with gradients enabled, as in training)

    if case.startswith("graddiff"):
        forget_fn, retain_fn = _graddiff_parts(method.model, batch)
    else:
        forget_fn, retain_fn = _npo_parts(method.model, load_vlm(tiny_llava_dir)[0], batch)
    sam, plain, norm, perturbed_loss = _by_hand(params, forget_fn, retain_fn, rho)
    for a, b in zip(got, sam, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
    # The perturbation matters: the SAM gradient is far from the plain one (so the check above can fail).
    flat = torch.cat([x.flatten() for x in sam]), torch.cat([x.flatten() for x in plain])
    assert (flat[0] - flat[1]).norm() > 0.01 * flat[1].norm()
    assert terms["sam_grad_norm"].item() == pytest.approx(norm, rel=1e-5)
    assert terms["sam_forget_loss"].item() == pytest.approx(perturbed_loss, rel=1e-5)
    assert terms["sam_forget_loss"] > terms["forget_loss"]  # the worst nearby weights, to first order
    assert loss.item() == pytest.approx(perturbed_loss + retain_fn().item(), rel=1e-5)


def test_weights_are_restored_bit_for_bit_even_when_the_perturbed_pass_fails(tiny_llava_dir, synthetic_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    method = GradDiff(model, sgd(0.1), processor=processor, sam=SharpnessAware(0.5))
    (forget, _), (retain, _) = _batches(processor, synthetic_dir)
    batch = {"forget": forget, "retain": retain}
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    terms = method.step_terms(batch)
    terms["loss"].backward()
    assert terms["sam_forget_loss"] > terms["forget_loss"] + 0.1  # the weights did move in between
    for name, param in method.named_parameters():
        assert torch.equal(param, before[name]), name

    calls = []

    def failing_second_pass(batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory in the perturbed pass")
        return GradDiff.forget_terms(method, batch)

    method.forget_terms = failing_second_pass
    with pytest.raises(RuntimeError, match="perturbed pass"):
        method.step_terms(batch)
    for name, param in method.named_parameters():
        assert torch.equal(param, before[name]), name


def test_rho_zero_is_exactly_the_plain_method(tiny_llava_dir, synthetic_dir):
    def gradients(sam):
        model, processor = tiny_model(tiny_llava_dir, lora=False)
        method = NPO(model, sgd(0.1), processor=processor, reference=FrozenCopy(), beta=0.5, sam=sam)
        (forget, _), (retain, _) = _batches(processor, synthetic_dir)
        batch = {"forget": forget, "retain": retain}
        if sam is None:
            method.compute_loss(batch)["loss"].backward()
        else:
            method.training_step(batch, 0).backward()
        return {n: p.grad for n, p in method.trainable_parameters()}, method.step_terms(batch)

    plain, plain_terms = gradients(None)
    off, off_terms = gradients(SharpnessAware(0.0))
    on, _ = gradients(SharpnessAware(0.05))
    assert plain.keys() == off.keys() and all(torch.equal(plain[n], off[n]) for n in plain)
    assert not all(torch.equal(plain[n], on[n]) for n in plain)
    assert off_terms.keys() == plain_terms.keys() and "sam_forget_loss" not in off_terms


def test_parameters_the_forget_part_does_not_reach_get_the_plain_gradient(tiny_llava_dir, synthetic_dir):
    """RMU under LoRA: the forget pass stops after layer 1, so adapters of layers 2-3 only see retain."""

    def gradients(rho):
        model, processor = tiny_model(tiny_llava_dir, lora=True)
        method = RMU(model, sgd(0.1), processor=processor, reference=FrozenCopy(), layer=1, alpha=5.0)
        method.sam = SharpnessAware(rho) if rho else None
        (forget, _), (retain, _) = _batches(processor, synthetic_dir)
        method.training_step({"forget": forget, "retain": retain}, 0).backward()
        return {n: p.grad for n, p in method.trainable_parameters()}

    plain, sam = gradients(0.0), gradients(0.05)
    late = [n for n in plain if ".layers.2." in n or ".layers.3." in n]
    early = [n for n in plain if ".layers.0." in n or ".layers.1." in n]
    assert late and early
    assert all(torch.equal(plain[n], sam[n]) for n in late)
    assert not all(torch.equal(plain[n], sam[n]) for n in early)


# --- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_rho_is_an_error_naming_the_key(rho):
    with pytest.raises(ValueError, match=r"method\.sam\.rho must be a finite number >= 0 \(0 = off\), got"):
        SharpnessAware(rho)


def test_every_unlearning_config_has_sam_off_and_the_key_fails_elsewhere(tiny_llava_dir, tmp_path):
    from hydra.errors import InstantiationException

    for name in ("npo", "simnpo", "graddiff", "rmu", "idkdpo", "idknpo"):
        cfg = compose_config(["experiment=unlearn_tiny", f"method={name}"], tmp_path)
        assert cfg.method.sam.rho == 0.0, name
        assert instantiate(cfg.method.sam).rho == 0.0
    cfg = compose_config(["experiment=npo_tiny", "method.sam.rho=-1"], tmp_path)
    with pytest.raises(InstantiationException, match=r"method\.sam\.rho must be a finite number >= 0"):
        instantiate(cfg.method.sam)
    # SFT is no unlearning method: the key does not exist, and forcing it in is refused when built.
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'method\.sam\.rho'"):
        compose_config(["experiment=sft_tiny", "method.sam.rho=0.1"], tmp_path)
    cfg = compose_config(["experiment=sft_tiny", "+method.sam.rho=0.1"], tmp_path)
    model, processor = load_vlm(tiny_llava_dir)
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'sam'"):
        instantiate(cfg.method, model=model, processor=processor)


def test_sam_needs_a_split_loss_and_whole_weights(tiny_llava):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy

    class WholeLoss(UnlearningMethod):
        def compute_loss(self, batch):
            return {"loss": self.answer_loss(batch["forget"])}

    model, processor = tiny_llava
    with pytest.raises(
        TypeError, match="needs WholeLoss to split its loss into forget_terms and retain_terms"
    ):
        WholeLoss(model, sgd(0.1), processor=processor, sam=SharpnessAware(0.1))
    WholeLoss(model, sgd(0.1), processor=processor, sam=SharpnessAware(0.0))  # off: nothing to split
    sam = SharpnessAware(0.1)
    sam.check_strategy(SingleDeviceStrategy("cpu"))
    sam.check_strategy(DDPStrategy())
    with pytest.raises(ValueError, match="not FSDPStrategy"):
        sam.check_strategy(FSDPStrategy())


# --- through the training workflow --------------------------------------------------------------------


def test_sam_npo_tiny_trains_and_logs_the_perturbed_forget_loss(tmp_path, cache_dir):
    from mirage.workflows.training import train

    cfg = compose_config(
        [
            "experiment=sam_npo_tiny",
            "trainer.max_steps=3",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false",
            f"paths.cache_dir={cache_dir}",
            f"paths.work_dir={tmp_path}",  # composed in-process: no Hydra runtime to read it from
        ],
        tmp_path,
    )
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 3 and objects["method"].sam.rho == 0.05
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    assert len(rows) == 3
    for row in rows:
        sam_forget, forget = float(row["train/sam_forget_loss"]), float(row["train/forget_loss"])
        assert math.isfinite(sam_forget) and sam_forget > forget
        assert float(row["train/sam_grad_norm"]) > 0
        assert float(row["train/loss"]) == pytest.approx(
            sam_forget + float(row["train/retain_loss"]), rel=1e-5
        )
    assert (tmp_path / "hf" / "mirage_export.json").is_file()


@pytest.mark.slow
def test_a_killed_sam_run_resumes_bit_identical(tmp_path, cache_dir, tiny_llava_dir, synthetic_dir):
    """The SAM step adds passes but no randomness: killed mid-epoch and resumed from last.ckpt, a run ends
    with the weights of a run never stopped (the tiny model and data exist first, as in test_resume)."""
    from safetensors.torch import load_file
    from tests.cli import cli_command, run_cli

    args = ["experiment=sam_npo_tiny", "trainer.max_steps=8", "data.shuffle=true"]
    args += ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_summary=null"]
    kill = ["+callbacks.kill._target_=tests.e2e.sigkill.SigkillAtStep", "+callbacks.kill.step=3"]

    def train(*extra, check=True):
        command = cli_command("mirage.train", [*args, *extra], cache_dir, "callbacks.rich_progress_bar=null")
        return run_cli(command, timeout=300, check=check)

    train(f"hydra.run.dir={tmp_path / 'unbroken'}")
    killed = train(f"hydra.run.dir={tmp_path / 'resumed'}", *kill, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    train(f"hydra.run.dir={tmp_path / 'resumed'}", "ckpt_path=last")
    unbroken, resumed = (
        load_file(tmp_path / run / "hf" / "model.safetensors") for run in ("unbroken", "resumed")
    )
    assert unbroken.keys() == resumed.keys()
    assert all(torch.equal(unbroken[name], resumed[name]) for name in unbroken)
