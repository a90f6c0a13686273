"""Sharpness-aware unlearning (Fan et al. 2025, arXiv 2502.05374), for any unlearning method.

Relearning resists better when the forget loss L_f is minimised at the worst weights near theta:

    e = rho * grad L_f(theta) / ||grad L_f(theta)||      (L2 norm over all trainable parameters)
    gradient of the step = grad L_f(theta + e) + grad L_retain(theta)

``method.sam.rho`` sets rho (0 = off: the method's plain step, not this code). One step runs the forget
part at theta, its gradient (``torch.autograd.grad``, so ``.grad`` is not touched), the forget part again
at theta + e and its gradient, then puts the weights back bit for bit (from a copy, not by subtracting e),
and only then runs the retain part at theta: no graph that Lightning will back-propagate ever saw the
perturbed weights. The loss handed to Lightning has the value L_retain(theta) + L_f(theta + e) and the
gradient above, so gradient accumulation, clipping, mixed precision and the non-finite stop work as in
any step. Cost: one more forward and backward of the forget part per step (and of a live reference's
forward on it), and one copy of the trainable weights while they are moved. Activation checkpointing
works as long as it is non-reentrant (mirage's), since ``torch.autograd.grad`` is used.

Strategies: single device and DDP. Under DDP each rank perturbs along its own batch's forget gradient
(not the all-reduced one; the inner passes run inside DDP's one forward, before its one backward, which
all-reduces the final gradient as usual). FSDP and DeepSpeed shard the weights this step perturbs in
place, so they are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from mirage.methods.base import require

Batch = dict[str, dict[str, Any]]
Terms = dict[str, torch.Tensor]


class SplitLoss(Protocol):
    """What the SAM step needs from a method: its loss in a forget and a retain part (UnlearningMethod)."""

    def forget_terms(self, batch: Batch) -> Terms: ...

    def retain_part(self, batch: Batch) -> Terms: ...

    def combine(self, forget: Terms, retain: Terms) -> Terms: ...

    def trainable_parameters(self) -> Iterable[tuple[str, nn.Parameter]]: ...


class SharpnessAware:
    """The SAM step with radius ``rho`` (config ``method.sam``); ``rho = 0`` leaves the method as it is."""

    def __init__(self, rho: float = 0.0) -> None:
        finite = isinstance(rho, (int, float)) and not isinstance(rho, bool) and math.isfinite(rho)
        require(finite and rho >= 0, "sam.rho", rho, "a finite number >= 0 (0 = off)")
        self.rho = float(rho)

    def __repr__(self) -> str:
        return f"SharpnessAware(rho={self.rho})"

    def check_strategy(self, strategy: Any) -> None:
        """Refuse strategies that shard the weights (the step perturbs them in place, whole)."""
        from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy

        whole = isinstance(strategy, SingleDeviceStrategy) or (
            isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)
        )
        if not whole:
            raise ValueError(
                f"method.sam.rho > 0 runs on a single device or under DDP, not {type(strategy).__name__} "
                "(it perturbs whole weights in place); set method.sam.rho=0 or trainer=ddp"
            )

    def step_terms(self, method: SplitLoss, batch: Batch) -> Terms:
        """The method's terms at theta plus ``sam_forget_loss`` (L_f at theta + e) and ``sam_grad_norm``
        (||grad L_f(theta)||); ``loss`` = L_retain(theta) + L_f(theta + e), with the SAM gradient."""
        params = [p for _, p in method.trainable_parameters()]
        forget = method.forget_terms(batch)
        grads = _gradients(forget["forget_loss"], params)
        norm = _global_norm(grads, forget["forget_loss"])
        norm_value = float(norm)
        if math.isfinite(norm_value) and norm_value > 0:
            saved: list[tuple[nn.Parameter, torch.Tensor]] = []
            try:
                _perturb(params, grads, self.rho / norm_value, saved)
                forget_p = method.forget_terms(batch)["forget_loss"]
                grads_p = _gradients(forget_p, params)
            finally:
                _restore(saved)
            forget_p = forget_p.detach()
        else:
            # A zero gradient has no direction: the step is the plain one. A non-finite norm is reported
            # as sam_grad_norm and stops the run (MethodModule.check_finite) before any backward.
            forget_p, grads_p = forget["forget_loss"].detach(), grads
        # The forget graph at theta was freed by autograd.grad; keep the values only.
        terms = method.combine({k: v.detach() for k, v in forget.items()}, method.retain_part(batch))
        terms["sam_forget_loss"] = forget_p
        terms["sam_grad_norm"] = norm
        terms["loss"] = terms["retain_loss"] + forget_p + _with_gradients(params, grads_p, forget_p)
        return terms


def _gradients(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor | None]:
    """d loss / d p for every parameter (None where the loss does not depend on it)."""
    if not loss.requires_grad:  # e.g. a forget pass that stops before every trainable layer
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _global_norm(grads: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """The L2 norm of all gradients together, in float32 (a bf16 sum of squares loses the small ones)."""
    norms = [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]
    if not norms:
        return torch.zeros((), dtype=torch.float32, device=like.device)
    return torch.linalg.vector_norm(torch.stack(norms))


def _perturb(
    params: Sequence[nn.Parameter],
    grads: list[torch.Tensor | None],
    scale: float,
    saved: list[tuple[nn.Parameter, torch.Tensor]],
) -> None:
    """theta + scale * g, in place; each original goes to ``saved`` first, and each g is dropped once used
    (peak memory: one copy of the trainable weights, not two)."""
    with torch.no_grad():
        for i, param in enumerate(params):
            if grads[i] is not None:
                saved.append((param, param.detach().clone()))
                param.add_(grads[i], alpha=scale)
                grads[i] = None


def _restore(saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """The original weights, bit for bit (theta + e - e would not be)."""
    with torch.no_grad():
        for param, original in saved:
            param.copy_(original)


class _GradientsOf(torch.autograd.Function):
    """Value 0, gradient ``grad_output * g`` for each parameter: hands precomputed gradients to the one
    backward Lightning runs (so DDP hooks, loss scaling and accumulation all see them)."""

    @staticmethod
    def forward(ctx: Any, grads: tuple[torch.Tensor, ...], like: torch.Tensor, *params: torch.Tensor):
        ctx.grads = grads
        return torch.zeros_like(like)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        return (None, None, *(grad_output.to(g.dtype) * g for g in ctx.grads))


def _with_gradients(
    params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None], like: torch.Tensor
) -> torch.Tensor:
    """A zero scalar (shaped and typed as ``like``) whose backward adds ``grads`` to ``params``."""
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    if not pairs:
        return torch.zeros_like(like)
    return _GradientsOf.apply(tuple(g for _, g in pairs), like, *(p for p, _ in pairs))
