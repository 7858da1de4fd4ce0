"""Adaptive adversarial training (adaptive_at §4, Algorithm 1, Eq. 8-14) over PGD, FreeLB and TA-VAT.

The base method's inner maximisation (``EmbeddingAT.ascend``, Eq. 3/5) yields ``x_0 = x + delta_0``
and the per-step increments ``delta_1 .. delta_k``. To first order (Eq. 8, 10) PGD and FreeLB
minimise ``L(x_0) + beta/alpha * sum_i w_i delta_i^2`` with ``beta * w_i = 1`` (PGD, ``beta = k``)
or ``w_i = (k - i + 1) / k / beta`` (FreeLB, ``beta = (k + 1)/2``). Adaptive AT learns ``w``
(Eq. 11: ``w_i >= 0``, ``sum_i w_i = 1``) through the surrogate of Eq. 12,

    J_hat(Θ, w) = L(Θ, x_0 + beta * sum_i w_i delta_i, y),

solving ``min_Θ max_w J_hat`` (Eq. 14): one backward pass gives both gradients; Θ descends through
the trainer's optimiser and ``w`` ascends (Algorithm 1, lines 6-7) here, outside the model's
parameters. ``beta`` follows §5.3: ``k`` for PGD and TA-VAT, ``(k + 1)/2`` for FreeLB.

Implementation choices the paper leaves open:

* the constraint of Eq. 11 is kept by projected gradient ascent, ``w <- P(w + eta * dJ/dw)`` with
  ``P`` the Euclidean projection onto the probability simplex (Duchi et al. 2008). It is the
  direct method for a simplex-constrained problem, can reach a vertex (``J_hat`` is linear in
  ``w`` to first order, so the maximiser is one), and keeps the plain gradient the paper names;
  a softmax parametrisation would never reach zero weights and would rescale the gradient.
* "we initialize w to a vector of ones" (§4.1) is read as ones scaled onto the simplex,
  ``w_i = 1/k``: with ``beta = k`` this is exactly PGD (``beta * w_i = 1``, "one can assume that
  their weights are uniformly set to 1", §4.2).
* the step size of ``w`` (``weight_lr``) is not given in the paper.
* FreeLB+adaptive and TA-VAT+adaptive train Θ on ``J_hat`` only (Algorithm 1, line 7), so their
  ascent passes compute no parameter gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from defenses.base import DefenseConfig, TrainingContext, register_defense
from defenses.embedding_at import (FreeLB, FreeLBConfig, PGD, PGDConfig, TAVAT, TAVATConfig, EmbeddingAT,
                                   Trajectory, adversarial_loss, check_tavat)
from defenses.perturbation import PerturbationConfig
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier

WEIGHT_LR = 1.0  # not in the paper; see the module docstring


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a vector onto ``{w : w_i >= 0, sum_i w_i = 1}`` (Duchi et al. 2008, Fig. 1)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, dim=0) - 1
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - cumulative / index > 0).max())
    theta = cumulative[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0)


def adaptive_loss(model: TextClassifier, batch: Batch, trajectory: Trajectory, weights: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """``J_hat = L(x_0 + beta * sum_i w_i delta_i)`` (adaptive_at Eq. 12), ``x_0 = x + delta_0``."""
    increments = torch.stack(trajectory.increments)  # [k, B, T, D]
    combined = torch.tensordot(weights.to(increments), increments, dims=1)
    return adversarial_loss(model, model.embed(batch) + trajectory.init + beta * combined, batch)


def _check_adaptive(name: str, cfg: Any) -> None:
    """The base method's perturbation was checked by the caller; these are ``w``'s settings."""
    if cfg.weight_lr < 0:
        raise SuiteError(f"{name}: weight_lr (the ascent step of w) must be >= 0, got {cfg.weight_lr}")
    if cfg.beta is not None and cfg.beta <= 0:
        raise SuiteError(f"{name}: beta must be > 0 (or null for the method's default), got {cfg.beta}")


@dataclass(frozen=True)
class AdaptivePGDConfig(PGDConfig):
    """PGD settings (adaptive_at §5.3: step 0.04, k = 5) plus ``w``'s step and ``beta`` (null: k)."""

    weight_lr: float = WEIGHT_LR
    beta: float | None = None

    def __post_init__(self) -> None:
        self.perturbation.check("pgd+adaptive")
        _check_adaptive("pgd+adaptive", self)


@dataclass(frozen=True)
class AdaptiveFreeLBConfig(FreeLBConfig):
    """FreeLB with adaptive_at §5.3's step 0.04 and k = 5 (Table 10); ``beta`` null: (k + 1)/2."""

    perturbation: PerturbationConfig = PerturbationConfig(steps=5, step_size=0.04, init_magnitude=0.05, max_norm=0.0)
    weight_lr: float = WEIGHT_LR
    beta: float | None = None

    def __post_init__(self) -> None:
        self.perturbation.check("freelb+adaptive")
        _check_adaptive("freelb+adaptive", self)


@dataclass(frozen=True)
class AdaptiveTAVATConfig(TAVATConfig):
    """TA-VAT with adaptive_at §5.3's step 0.04 and k = 5 (Table 10); ``beta`` null: k."""

    perturbation: PerturbationConfig = PerturbationConfig(steps=5, step_size=0.04, init_magnitude=0.2, max_norm=0.5)
    weight_lr: float = WEIGHT_LR
    beta: float | None = None

    def __post_init__(self) -> None:
        check_tavat("tavat+adaptive", self.perturbation)
        _check_adaptive("tavat+adaptive", self)


class AdaptiveAT(EmbeddingAT):
    """Algorithm 1 over a base method's inner maximisation; combine with the base class."""

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.weights = torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64)
        self._weight_grad: torch.Tensor | None = None

    def default_beta(self) -> float:
        """The base method's implicit adversarial weight (adaptive_at §4.1, §5.3)."""
        return float(self.steps)

    @property
    def beta(self) -> float:
        beta = self.cfg.beta
        return self.default_beta() if beta is None else float(beta)

    def on_train_start(self, context: TrainingContext) -> None:
        super().on_train_start(context)
        self.weights = torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64)
        self._weight_grad = None

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        """Lines 4-5 of Algorithm 1; leaves ``dJ/dΘ`` in ``.grad`` and keeps ``dJ/dw`` for line 6."""
        trajectory = self.ascend(batch, context)
        weights = self.weights.detach().clone().requires_grad_()
        loss = adaptive_loss(self.model, batch, trajectory, weights, self.beta)
        loss.backward()
        assert weights.grad is not None
        self._weight_grad = weights.grad.detach().clone()
        return {"loss": float(loss.detach())}

    def after_optimizer_step(self, context: TrainingContext) -> None:
        """Line 6: projected gradient ascent on ``w`` (Eq. 11, 14)."""
        super().after_optimizer_step(context)
        if self._weight_grad is not None:
            lr = self.cfg.weight_lr
            self.weights = project_to_simplex(self.weights + lr * self._weight_grad)
            self._weight_grad = None

    def on_epoch_end(self, context: TrainingContext) -> None:
        super().on_epoch_end(context)
        for i, value in enumerate(self.weights.tolist(), start=1):
            context.log_metric(f"adaptive.w_{i}", value, context.epoch + 1)


@register_defense("pgd+adaptive")
class AdaptivePGD(AdaptiveAT, PGD):
    """PGD + adaptive AT (adaptive_at Tables 2-5 "PGD +Ours"), ``beta = k``."""

    Config = AdaptivePGDConfig
    reference = "adaptive_at §4 Algorithm 1, Eq. 12-14; §5.3"


@register_defense("freelb+adaptive")
class AdaptiveFreeLB(AdaptiveAT, FreeLB):
    """FreeLB + adaptive AT (adaptive_at Tables 2-5 "FreeLB +Ours"), ``beta = (k + 1)/2``."""

    Config = AdaptiveFreeLBConfig
    reference = "adaptive_at §4 Algorithm 1, Eq. 10-14; §5.3"

    def default_beta(self) -> float:
        return (self.steps + 1) / 2


@register_defense("tavat+adaptive")
class AdaptiveTAVAT(AdaptiveAT, TAVAT):
    """TA-VAT + adaptive AT (adaptive_at Tables 2-5 "TA-VAT +Ours"), ``beta = k``."""

    Config = AdaptiveTAVATConfig
    reference = "adaptive_at §4 Algorithm 1, Eq. 12-14; §5.3"
