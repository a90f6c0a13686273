"""NPO, RMU, GradDiff and SimNPO: formulas against hand values, reference strategies against each other,
and short runs on the tiny LLaVA that must move the model the way each method promises."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from tests.methods.tiny_runs import datamodule, fit, sgd, tiny_model, trajectories_per_strategy

from mirage.data.readers import read_conversations
from mirage.methods.graddiff import GradDiff
from mirage.methods.npo import NPO, npo_log_ratio, npo_loss
from mirage.methods.reference import AdaptersOff, FrozenCopy, Precompute, row_keys
from mirage.methods.rmu import RMU, control_vector, masked_mse
from mirage.methods.simnpo import SimNPO
from mirage.models.families import decoder_layers
from mirage.models.finetune import FinetuneSpec, apply_finetune, count_parameters
from mirage.models.hooks import layer_hidden_states
from mirage.models.loading import load_vlm

# --- formulas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9, 2.0])
def test_npo_equals_2_over_beta_log_2_when_model_is_reference(beta):
    d = torch.zeros(5)
    assert npo_loss(d, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


def test_npo_reductions_by_hand():
    nll, count = torch.tensor([4.0, 9.0]), torch.tensor([2, 3])
    ref_nll, ref_count = torch.tensor([3.0, 6.0]), torch.tensor([2, 3])
    seq = npo_log_ratio(nll, count, ref_nll, ref_count, "sequence")
    assert seq.tolist() == [1.0, 3.0]
    tok = npo_log_ratio(nll, count, ref_nll, ref_count, "token_mean")
    assert tok.item() == pytest.approx(13 / 5 - 9 / 5)  # mean token NLLs over the batch
    beta = 0.5
    expected_seq = -(2 / beta) * (math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(-1.5)))) / 2
    assert npo_loss(seq, beta).item() == pytest.approx(expected_seq, rel=1e-6)
    expected_tok = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * 0.8)))
    assert npo_loss(tok, beta).item() == pytest.approx(expected_tok, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        npo_log_ratio(nll, count, ref_nll, ref_count, "mean")


def test_masked_mse_by_hand():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # (1 + 4 + 4 + 9) / (2 tokens * 2 dims)
    assert masked_mse(states, target, mask).item() == pytest.approx(18 / 4)


def test_control_vector_is_seeded_with_norm_c():
    a, b, c = (
        control_vector(64, 10.0, seed=3),
        control_vector(64, 10.0, seed=3),
        control_vector(64, 10.0, seed=4),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.norm().item() == pytest.approx(10.0, rel=1e-6) and (a >= 0).all()


@pytest.mark.parametrize("lora", [True, False])
def test_reference_strategies_give_identical_npo_losses(lora, tiny_llava_dir, synthetic_dir, tmp_path):
    def npo(model, processor, reference):
        return NPO(
            model,
            optimizer=sgd(0.5),
            processor=processor,
            reference=reference,
            beta=0.5,
            alpha_retain_npo=0.3,
            reduction="sequence",
        )

    trajectories = trajectories_per_strategy(npo, lora, tiny_llava_dir, synthetic_dir, tmp_path)
    first = trajectories.pop("precompute")
    # Step 0: the model is its own reference, so L = alpha_f (2/beta) log 2 + alpha_r retain-NPO(0) + CE.
    for name, losses in trajectories.items():
        assert losses == pytest.approx(first, abs=1e-5), name
    assert len(set(round(x, 4) for x in first)) > 1  # the model moved, so later steps test the reference


@pytest.mark.parametrize("lora", [True, False])
def test_reference_strategies_give_identical_rmu_losses(lora, tiny_llava_dir, synthetic_dir, tmp_path):
    def rmu(model, processor, reference):
        return RMU(
            model,
            optimizer=sgd(0.5),
            processor=processor,
            reference=reference,
            layer=1,
            steering_coeff=2.0,
            alpha=5.0,
        )

    trajectories = trajectories_per_strategy(rmu, lora, tiny_llava_dir, synthetic_dir, tmp_path)
    first = trajectories.pop("precompute")
    for name, losses in trajectories.items():
        assert losses == pytest.approx(first, abs=1e-5), name
    assert len(set(round(x, 4) for x in first)) > 1


def test_precompute_cache_is_keyed_by_content_and_reused_across_settings(
    tiny_llava_dir, synthetic_dir, tmp_path
):
    def run(forget_tokens="answer", n_forget=16):
        model, processor = tiny_model(tiny_llava_dir, lora=False)
        reference = Precompute(tmp_path / "ref")
        method = NPO(
            model, optimizer=sgd(0.0), processor=processor, reference=reference, forget_tokens=forget_tokens
        )
        fit(method, datamodule(processor, synthetic_dir, n_forget=n_forget), steps=1)
        return reference

    first = run()
    shards = sorted((first.cache_dir / "nll").iterdir())
    assert (first.computed, first.reused) == (16, 0) and len(shards) == 1
    stamp = shards[0].stat().st_mtime_ns
    again = run()
    assert again.cache_dir == first.cache_dir and (again.computed, again.reused) == (0, 16)
    assert sorted((first.cache_dir / "nll").iterdir()) == shards and shards[0].stat().st_mtime_ns == stamp
    # The question's tokens are other content: new rows in the same cache, next to the answers' rows.
    query = run(forget_tokens="query", n_forget=20)
    assert query.cache_dir == first.cache_dir and (query.computed, query.reused) == (20, 0)
    more = run(n_forget=20)  # 4 new samples: only their rows are computed
    assert (more.computed, more.reused) == (4, 16) and len(list((first.cache_dir / "nll").iterdir())) == 3
    # Cached values equal a live pass of the untouched model, looked up by content whatever the batching.
    model, processor = load_vlm(tiny_llava_dir)
    dm = datamodule(processor, synthetic_dir)
    batch = dm.collate_train(dm.split("forget").samples[1:4])
    from mirage.methods.losses import sequence_nll

    live_nll, live_count = sequence_nll(model(**NPO.model_inputs(batch)).logits, batch["labels"])
    cached_nll, cached_count = more.sequence_nll(None, batch, "labels")
    assert cached_nll.tolist() == pytest.approx(live_nll.tolist(), rel=1e-5)
    assert cached_count.tolist() == live_count.tolist()
    # Content the pass never scored is a clear error, not another row's value.
    unseen = dm.collate_train(read_conversations(synthetic_dir / "forget.json")[30:32])
    with pytest.raises(
        KeyError, match=r"has no 'labels' NLLs for sample\(s\) \['train_\d+', 'train_\d+'\] of \["
    ):
        more.sequence_nll(None, unseen, "labels")


def test_row_keys_name_content_not_position_or_padding(processor, synthetic_dir):
    dm = datamodule(processor, synthetic_dir)
    samples = dm.split("forget").samples
    alone, padded = dm.collate_train(samples[:1]), dm.collate_train(samples[:4])
    assert padded["input_ids"].shape[1] > int(alone["attention_mask"].sum())  # row 0 is padded in the batch
    assert row_keys(alone, "labels")[0] == row_keys(padded, "labels")[0]
    keys = row_keys(padded, "labels") + row_keys(padded, "prompt_labels") + row_keys(padded, None)
    keys += row_keys(padded["alternate"], "labels")
    assert len(set(keys)) == 16  # four rows, four views of them: all distinct


def test_adapters_off_needs_lora(tiny_llava_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    with pytest.raises(ValueError, match="adapters_off needs a LoRA model"):
        NPO(model, optimizer=sgd(0.1), processor=processor, reference=AdaptersOff())


# --- truncated passes -----------------------------------------------------------------------------


def test_truncated_pass_equals_the_full_pass_and_the_frozen_copy_is_cut(tiny_llava_dir, synthetic_dir):
    model, processor = load_vlm(tiny_llava_dir)
    dm = datamodule(processor, synthetic_dir)
    batch = dm.collate_train(dm.split("retain").samples[:3])
    inputs = NPO.model_inputs(batch)
    with torch.no_grad():
        full = model(**inputs, output_hidden_states=True).hidden_states
        for k in range(3):  # hidden_states[k + 1] is layer k's output, except the last (after the final norm)
            torch.testing.assert_close(layer_hidden_states(model, inputs, k, truncate=True), full[k + 1])
    method = RMU(
        apply_finetune(model, FinetuneSpec()),
        optimizer=sgd(0.1),
        processor=processor,
        reference=FrozenCopy(),
        layer=1,
    )
    assert len(decoder_layers(method.reference._frozen[0])) == 2 and len(decoder_layers(method.model)) == 4


def test_rmu_trains_the_references_parameters_by_default(tiny_llava_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    method = RMU(model, optimizer=sgd(0.1), processor=processor, reference=None, layer=2, alpha=0.0)
    trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
    assert trainable == {f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)} | {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
        "model.multi_modal_projector.linear_2.weight",
        "model.multi_modal_projector.linear_2.bias",
    }
    projector = sum(p.numel() for n, p in model.named_parameters() if "multi_modal_projector" in n)
    assert count_parameters(method.model)["trainable"] == 3 * 128 * 64 + projector
    groups = method.configure_optimizers().param_groups
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(method.model)["trainable"]


# --- behaviour on the tiny model ------------------------------------------------------------------


def _forget_retain_nll(model, processor, synthetic_dir):
    from mirage.methods.losses import sequence_nll

    dm = datamodule(processor, synthetic_dir)
    out = {}
    model.eval()
    with torch.no_grad():
        for split in ("forget", "retain"):
            batch = dm.collate_train(dm.split(split).samples[:8])
            nll, count = sequence_nll(model(**NPO.model_inputs(batch)).logits, batch["labels"])
            out[split] = (nll.sum() / count.sum()).item()
    model.train()
    return out


def test_npo_raises_forget_nll_while_retain_stays_bounded(tiny_llava_dir, synthetic_dir, tmp_path):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    before = _forget_retain_nll(model, processor, synthetic_dir)
    method = NPO(
        model,
        optimizer=functools.partial(torch.optim.AdamW, lr=2e-3),
        processor=processor,
        reference=Precompute(tmp_path / "ref"),
        beta=0.5,
    )
    recorder = fit(method, datamodule(processor, synthetic_dir, n_forget=16, n_retain=8), steps=30)
    after = _forget_retain_nll(method.model, processor, synthetic_dir)
    assert after["forget"] > before["forget"] + 1.0  # forget answers became much less likely
    assert after["retain"] < before["retain"]  # retain answers did not (lambda * CE)
    assert all(math.isfinite(x) for x in recorder.losses)


def test_rmu_moves_forget_states_to_the_control_vector_and_keeps_retain_states(
    tiny_llava_dir, synthetic_dir, tmp_path
):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    reference_copy, _ = load_vlm(tiny_llava_dir)
    # Layers 0-1 train whole (a random tiny model needs the capacity); no CE term, to isolate the two MSEs;
    # answer tokens only, since forget and retain share their template tokens.
    method = RMU(
        model,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        processor=processor,
        reference=Precompute(tmp_path / "ref"),
        layer=1,
        steering_coeff=4.0,
        alpha=5.0,
        retain_weight=0.0,
        token_mask="answer",
        trainable_regex=r"layers\.[01]\.|multi_modal_projector",
    )
    dm = datamodule(processor, synthetic_dir)
    forget = dm.collate_train(dm.split("forget").samples[:8])
    retain = dm.collate_train(dm.split("retain").samples[:8])

    def distances():
        with torch.no_grad():
            h_f = layer_hidden_states(method.model, NPO.model_inputs(forget), 1)
            h_r = layer_hidden_states(method.model, NPO.model_inputs(retain), 1)
            h_r_ref = layer_hidden_states(reference_copy, NPO.model_inputs(retain), 1)
        to_control = masked_mse(h_f, method.control.expand_as(h_f), forget["labels"] != -100).item()
        drift = masked_mse(h_r, h_r_ref, retain["labels"] != -100).item()
        return to_control, drift

    start_control, start_drift = distances()
    fit(method, dm, steps=80)
    end_control, end_drift = distances()
    assert start_drift == pytest.approx(0.0, abs=1e-10)
    assert end_control < 0.1 * start_control  # forget answers' states moved most of the way to c * u
    assert end_drift < 0.01 * start_control  # retain answers' states stayed near the frozen model's


def test_several_epochs_never_exhaust_the_retain_split(tiny_llava_dir, synthetic_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    method = GradDiff(model, optimizer=sgd(1e-4), processor=processor)
    recorder = fit(
        method, datamodule(processor, synthetic_dir, n_forget=16, n_retain=6, batch_size=4), epochs=3
    )
    assert len(recorder.retain_ids) == 3 * 4  # every step of every epoch had a retain batch
    flat = [i for ids in recorder.retain_ids for i in ids]
    retain = [s.id for s in read_conversations(synthetic_dir / "retain.json")[:6]]
    # The 6-sample retain split cycles in order (batches of 4, 2), epoch after epoch.
    assert flat[:12] == retain[:4] + retain[4:] + retain[:4] + retain[4:]


def test_simnpo_and_graddiff_terms(tiny_llava_dir, synthetic_dir):
    model, processor = tiny_model(tiny_llava_dir, lora=False)
    dm = datamodule(processor, synthetic_dir)
    batch = {s: dm.collate_train(dm.split(s).samples[:4]) for s in ("forget", "retain")}
    simnpo = SimNPO(model, optimizer=sgd(0.1), processor=processor, beta=2.0, gamma=0.5)
    terms = simnpo.compute_loss(batch)
    expected = -(2 / 2.0) * math.log(1 / (1 + math.exp(-(2.0 * terms["forget_nll"].item() - 0.5))))
    # forget_nll is the mean of per-sequence mean NLLs; with similar lengths the loss is close to this value.
    assert terms["forget_simnpo"].item() == pytest.approx(expected, rel=0.05)
    graddiff = GradDiff(model, optimizer=sgd(0.1), processor=processor, alpha_forget=0.5, retain_weight=2.0)
    terms = graddiff.compute_loss(batch)
    assert terms["loss"].item() == pytest.approx(
        -0.5 * terms["forget_ce"].item() + 2 * terms["retain_ce"].item()
    )
