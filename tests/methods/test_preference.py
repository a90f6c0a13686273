"""IdkDPO and IdkNPO: preference pairs from the data (each forget record's refusal as its alternate), losses
against their formulas by hand, the three reference strategies against each other, the content-keyed cache."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from tests.methods.tiny_runs import datamodule, fit, sgd, tiny_model, trajectories_per_strategy

from mirage.methods.idkdpo import IdkDPO
from mirage.methods.idknpo import IdkNPO
from mirage.methods.losses import answer_cross_entropy, sequence_nll
from mirage.methods.reference import FrozenCopy, Precompute
from mirage.models.loading import load_vlm


def _batch(processor, synthetic_dir, n=4):
    dm = datamodule(processor, synthetic_dir)
    return {split: dm.collate_train(dm.split(split).samples[:n]) for split in ("forget", "retain")}


def _nll(model, view):
    """Per-sequence summed answer NLLs and token counts, as plain floats."""
    with torch.no_grad():
        nll, count = sequence_nll(model(**IdkDPO.model_inputs(view)).logits, view["labels"])
    return nll.double().tolist(), count.tolist()


def _perturb(model, scale=0.05):
    """Move the model away from its reference, reproducibly."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_idkdpo_loss_by_hand(tiny_llava_dir, synthetic_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    beta, retain_weight = 0.5, 0.7
    reference = FrozenCopy()
    method = IdkDPO(
        model, sgd(0.1), processor=processor, reference=reference, beta=beta, retain_weight=retain_weight
    )
    batch = _batch(processor, synthetic_dir)
    with torch.no_grad():
        retain_ce = answer_cross_entropy(
            model(**IdkDPO.model_inputs(batch["retain"])).logits, batch["retain"]["labels"]
        )
        start = method.compute_loss(batch)
    # While the model is its reference: (2/beta) log 2 + retain_weight * CE(retain).
    assert start["forget_dpo"].item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    assert start["loss"].item() == pytest.approx(
        2 / beta * math.log(2) + retain_weight * retain_ce.item(), rel=1e-6
    )
    _perturb(method.model)
    reference, _ = load_vlm(tiny_llava_dir)
    forget, chosen_view = batch["forget"], batch["forget"]["alternate"]
    (rejected, _), (rejected_ref, _) = _nll(method.model, forget), _nll(reference, forget)
    (chosen, _), (chosen_ref, _) = _nll(method.model, chosen_view), _nll(reference, chosen_view)
    # log pi = -NLL: margin = (logp_c - ref_c) - (logp_r - ref_r)
    margins = [
        (cr - c) - (rr - r) for c, cr, r, rr in zip(chosen, chosen_ref, rejected, rejected_ref, strict=True)
    ]
    assert max(abs(m) for m in margins) > 0.5  # the perturbation made the preference term non-trivial
    dpo = -(2 / beta) * sum(_log_sigmoid(beta * m) for m in margins) / len(margins)
    with torch.no_grad():
        retain_ce = answer_cross_entropy(method(batch["retain"]).logits, batch["retain"]["labels"]).item()
        terms = method.compute_loss(batch)
    assert terms["forget_dpo"].item() == pytest.approx(dpo, rel=1e-5)
    assert terms["retain_ce"].item() == pytest.approx(retain_ce, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(dpo + retain_weight * retain_ce, rel=1e-5)
    chosen_ratio = sum(cr - c for c, cr in zip(chosen, chosen_ref, strict=True)) / len(chosen)
    assert terms["chosen_log_ratio"].item() == pytest.approx(chosen_ratio, rel=1e-4, abs=1e-4)


def test_idknpo_loss_by_hand(tiny_llava_dir, synthetic_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    beta, alternate_weight, retain_weight = 0.5, 0.3, 2.0
    weights = {"alternate_weight": alternate_weight, "retain_weight": retain_weight}
    method = IdkNPO(model, sgd(0.1), processor=processor, reference=FrozenCopy(), beta=beta, **weights)
    batch = _batch(processor, synthetic_dir)
    with torch.no_grad():
        start = method.compute_loss(batch)
    assert start["forget_npo"].item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)  # d = 0
    _perturb(method.model)
    reference, _ = load_vlm(tiny_llava_dir)
    (nll, _), (ref_nll, _) = _nll(method.model, batch["forget"]), _nll(reference, batch["forget"])
    d = [a - b for a, b in zip(nll, ref_nll, strict=True)]  # NLL_theta - NLL_ref per harmful answer
    assert max(abs(x) for x in d) > 0.5
    npo = -(2 / beta) * sum(_log_sigmoid(beta * x) for x in d) / len(d)
    alt_nll, alt_count = _nll(method.model, batch["forget"]["alternate"])
    alternate_ce = sum(alt_nll) / sum(alt_count)  # mean token NLL of the refusals
    ret_nll, ret_count = _nll(method.model, batch["retain"])
    retain_ce = sum(ret_nll) / sum(ret_count)
    with torch.no_grad():
        terms = method.compute_loss(batch)
    assert terms["forget_npo"].item() == pytest.approx(npo, rel=1e-5)
    assert terms["alternate_ce"].item() == pytest.approx(alternate_ce, rel=1e-5)
    expected = npo + alternate_weight * alternate_ce + retain_weight * retain_ce
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def _idkdpo(model, processor, reference):
    return IdkDPO(model, optimizer=sgd(0.5), processor=processor, reference=reference, beta=0.5)


def _idknpo(model, processor, reference):
    return IdkNPO(model, optimizer=sgd(0.5), processor=processor, reference=reference, beta=0.5)


@pytest.mark.parametrize(("make", "lora"), [(_idkdpo, True), (_idknpo, True), (_idkdpo, False)])
def test_reference_strategies_give_identical_losses(make, lora, tiny_llava_dir, synthetic_dir, tmp_path):
    trajectories = trajectories_per_strategy(make, lora, tiny_llava_dir, synthetic_dir, tmp_path)
    assert set(trajectories) == (
        {"precompute", "frozen_copy", "adapters_off"} if lora else {"precompute", "frozen_copy"}
    )
    first = trajectories.pop("precompute")
    for name, losses in trajectories.items():
        assert losses == pytest.approx(first, abs=1e-5), name
    assert len(set(round(x, 4) for x in first)) > 1  # the model moved, so later steps test the reference


def test_precompute_reuses_the_alternate_view_and_recomputes_changed_alternates(
    tiny_llava_dir, synthetic_dir, tmp_path
):
    def run(forget_path=None):
        model, processor = tiny_model(tiny_llava_dir, lora=False)
        reference = Precompute(tmp_path / "ref")
        method = IdkDPO(model, optimizer=sgd(0.0), processor=processor, reference=reference)
        fit(method, datamodule(processor, synthetic_dir, n_forget=8, forget_path=forget_path), steps=1)
        return reference

    first = run()
    assert (first.computed, first.reused) == (16, 0)  # 8 harmful answers, 8 refusals
    assert (run().computed, run().reused) == (0, 16)
    records = json.loads((synthetic_dir / "forget.json").read_text())
    records[2]["alternate"] = "no."
    records[5]["alternate"] = "i will not help with that, sorry."
    (tmp_path / "forget.json").write_text(json.dumps(records))
    changed = run(tmp_path / "forget.json")
    assert changed.cache_dir == first.cache_dir and (changed.computed, changed.reused) == (2, 14)


def test_a_forget_split_without_alternates_is_a_clear_error(tiny_llava_dir, synthetic_dir, tmp_path):
    records = json.loads((synthetic_dir / "forget.json").read_text())
    (tmp_path / "forget.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "alternate"} for r in records])
    )
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    method = IdkNPO(model, optimizer=sgd(0.1), processor=processor, reference=FrozenCopy())
    dm = datamodule(processor, synthetic_dir, forget_path=tmp_path / "forget.json")
    with pytest.raises(
        KeyError, match=r"no 'alternate' view: every record of its split \(.*forget\.json\) needs"
    ):
        fit(method, dm, steps=1)


def test_idkdpo_prefers_the_refusal_after_training(tiny_llava_dir, synthetic_dir, tmp_path):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    optimizer = functools.partial(torch.optim.AdamW, lr=2e-3)
    method = IdkDPO(
        model, optimizer=optimizer, processor=processor, reference=Precompute(tmp_path / "ref"), beta=0.5
    )
    fit(method, datamodule(processor, synthetic_dir, n_forget=16, n_retain=8), steps=12)
    batch = _batch(processor, synthetic_dir, n=8)
    method.model.eval()
    with torch.no_grad():
        terms = method.compute_loss(batch)
    # The refusals gained far more likelihood over the reference than the harmful answers did (DPO moves the
    # margin, not each side: the shared template makes the harmful answers likelier too on a tiny model).
    margin = terms["chosen_log_ratio"].item() - terms["rejected_log_ratio"].item()
    assert terms["chosen_log_ratio"].item() > 1.0 and margin > 2.0
    assert terms["forget_dpo"].item() < 0.5 * (2 / 0.5) * math.log(2)
