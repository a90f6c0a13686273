"""Loss helpers and the schedule, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mirage.methods.losses import answer_cross_entropy, sequence_nll, token_logprobs
from mirage.methods.schedules import cosine_with_warmup

IGN = -100


def _toy():
    # Batch of 2, 4 positions, vocabulary 3. Labels: only some positions are answer tokens.
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]],
            [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[IGN, IGN, 1, 2], [IGN, 2, 0, IGN]])
    return logits, labels


def _logp(row, token):
    return row[token] - math.log(sum(math.exp(v) for v in row))


def test_sequence_nll_sums_shifted_answer_tokens():
    logits, labels = _toy()
    # Position t predicts label t+1: row 0 uses logits[1] for token 1 and logits[2] for token 2.
    expected0 = _logp([0.0, 1.0, 0.0], 1) + _logp([0.0, 0.0, 3.0], 2)
    expected1 = _logp([0.0, 0.0, 0.0], 2) + _logp([1.0, 2.0, 3.0], 0)
    nll, count = sequence_nll(logits, labels)
    assert nll.tolist() == pytest.approx([-expected0, -expected1], abs=1e-6)
    assert count.tolist() == [2, 2]
    logp, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[False, True, True], [True, True, False]]
    assert logp[~mask].abs().sum() == 0


def test_answer_cross_entropy_is_mean_over_answer_tokens():
    logits, labels = _toy()
    nll = sequence_nll(logits, labels)[0].sum().item()
    assert answer_cross_entropy(logits, labels).item() == pytest.approx(nll / 4, abs=1e-6)
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_cross_entropy(logits, torch.full_like(labels, IGN))


def test_cosine_with_warmup_values():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=100, warmup_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11)  # warm-up: (step + 1) / (warmup + 1), warmup = 10 steps
    assert lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)  # peak, then cosine
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[99] < 0.001
