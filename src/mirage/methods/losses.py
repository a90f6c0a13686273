"""Loss building blocks shared by methods, on logits and answer-only labels (-100 elsewhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirage.data.collate import IGNORE_INDEX


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1's label."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the labels, and the mask of answer tokens (both ``[B, T-1]``)."""
    logits, labels = shift_for_next_token(logits, labels)
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood of the labelled tokens, number of labelled tokens), per sequence."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(dim=-1), mask.sum(dim=-1)


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all answer tokens in the batch."""
    logits, labels = shift_for_next_token(logits, labels)
    if not (labels != IGNORE_INDEX).any():
        raise ValueError("batch has no answer tokens (all labels are -100)")
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
