"""Shared arithmetic of embedding-space perturbations (used by every adversarial-training defense).

All perturbations live in the space of ``model.embed(batch)`` (``[B, T, D]``) and touch only
real tokens (``attention_mask == 1``). Norms are per example, over the whole [T x D] matrix of
real tokens, as in FreeLB (Zhu et al. 2020, Alg. 1) and TA-VAT; the L2 ball is the default,
``linf`` clips element-wise (Madry et al. 2018).

Every embedding-space defense configures its perturbation with one :class:`PerturbationConfig`,
held in its config as the nested field ``perturbation`` (YAML:
``defenses: {pgd: {perturbation: {steps: 5, step_size: 0.04}}}``; unset keys keep that
defense's own defaults).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from suite.core.errors import SuiteError
from suite.models.base import Batch

if TYPE_CHECKING:
    from defenses.base import TrainingContext


NORMS = ("l2", "linf")


@dataclass(frozen=True)
class PerturbationConfig:
    """The inner maximisation's settings, one naming scheme for every embedding-space defense.

    The papers' names: ``steps`` is k (adaptive_at Table 10; FreeLB's K, TRADES's K, SMART's
    T_x̃), ``step_size`` is α (adaptive_at Eq. 5; FreeLB's adv-lr, SMART's η), ``init_magnitude``
    the random start's scale (FreeLB's adv-init-mag, SMART's σ, TRADES's 0.001), ``max_norm``
    the ball's radius ε (FreeLB's adv-max-norm, TRADES/SMART's ε). ``max_norm`` ``None`` or ``0``
    means unbounded, except where the holding defense says otherwise (PGD: ``None`` is
    ``steps * step_size``; TRADES and SMART need a bounded ball). ``norm``: ``l2`` (per example over
    the [tokens x dim] matrix) or ``linf``.

    The limits differ per defense, so the config that holds it validates it (:meth:`check`).
    """

    steps: int
    step_size: float
    init_magnitude: float
    max_norm: float | None
    norm: str = "l2"

    def check(self, where: str, *, min_steps: int = 1, positive_step_size: bool = True,
              bounded: bool = False) -> None:
        """Refuse settings ``where``'s ascent cannot run with (one line naming the field)."""
        if self.norm not in NORMS:
            raise SuiteError(f"{where}: perturbation.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.steps < min_steps:
            raise SuiteError(f"{where}: perturbation.steps must be >= {min_steps}, got {self.steps}")
        if positive_step_size and self.step_size <= 0:
            raise SuiteError(f"{where}: perturbation.step_size (the ascent step) must be > 0, got {self.step_size}")
        if self.step_size < 0:
            raise SuiteError(f"{where}: perturbation.step_size must be >= 0, got {self.step_size}")
        if self.init_magnitude < 0:
            raise SuiteError(f"{where}: perturbation.init_magnitude must be >= 0 (0: zero start), "
                             f"got {self.init_magnitude}")
        if bounded and (self.max_norm is None or self.max_norm <= 0):
            raise SuiteError(f"{where}: perturbation.max_norm must be > 0 (the radius of the perturbation ball), "
                             f"got {self.max_norm}")
        if self.max_norm is not None and self.max_norm < 0:
            raise SuiteError(f"{where}: perturbation.max_norm must be >= 0 (0: unbounded), got {self.max_norm}")


def token_mask(batch: Batch, like: torch.Tensor) -> torch.Tensor:
    """``[B, T, 1]`` float mask of real tokens, in ``like``'s dtype and device."""
    return batch["attention_mask"].unsqueeze(-1).to(dtype=like.dtype, device=like.device)


def per_example_norm(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2 norm of each example's slice, shaped to broadcast against ``x`` (``[B, 1, 1]``)."""
    return x.flatten(1).norm(dim=1).clamp_min(eps).view(-1, *([1] * (x.dim() - 1)))


def normalize_gradient(grad: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """The ascent direction: ``g / ||g||_2`` per example (l2) or ``sign(g)`` (linf)."""
    if norm == "linf":
        return grad.sign()
    return grad / per_example_norm(grad)


def project(delta: torch.Tensor, epsilon: float | None, norm: str = "l2") -> torch.Tensor:
    """Project ``delta`` onto the ``epsilon`` ball (per example); ``None`` or ``<= 0``: unbounded."""
    if epsilon is None or epsilon <= 0:
        return delta
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    return delta * l2_projection_scale(delta, epsilon)


def l2_projection_scale(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``min(1, epsilon / ||delta||_2)`` per example (``[B, 1, 1]``): the factor that projects
    ``delta`` onto the L2 ball (TA-VAT applies it to both parts of its perturbation)."""
    return torch.clamp(epsilon / per_example_norm(delta), max=1.0)


def random_init(embeds: torch.Tensor, mask: torch.Tensor, magnitude: float, norm: str = "l2",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """FreeLB's random start on real tokens: for l2 ``delta_0 = U(-1,1) * magnitude / sqrt(L * D)``
    per coordinate (L = the example's real tokens, D = embedding size), so that
    ``||delta_0||_2 ~ magnitude / sqrt(3)``; for linf ``U(-magnitude, magnitude)``.
    ``magnitude <= 0`` gives zeros.
    """
    if magnitude <= 0:
        return torch.zeros_like(embeds)
    noise = torch.rand(embeds.shape, generator=generator, dtype=embeds.dtype, device="cpu").to(embeds.device)
    noise = (2 * noise - 1) * mask
    if norm == "linf":
        return noise * magnitude
    dims = (mask.flatten(1).sum(dim=1) * embeds.shape[-1]).clamp_min(1).view(-1, 1, 1)
    return noise * magnitude / dims.sqrt()


def step_generator(context: "TrainingContext") -> torch.Generator:
    """This training step's CPU generator (random starts, shuffles): a function of (seed,
    global_step) only, so a re-run draws the same noise."""
    return torch.Generator().manual_seed(int(context.seed) * 1_000_003 + int(context.global_step))
