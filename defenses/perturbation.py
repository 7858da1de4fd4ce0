"""Shared arithmetic of embedding-space perturbations (used by every adversarial-training defense).

All perturbations live in the space of ``model.embed(batch)`` (``[B, T, D]``) and touch only
real tokens (``attention_mask == 1``). The norms and projections (per example, L2 by default,
``linf`` element-wise) are ``suite.models.embedding_space``, shared with the k-PGD attack and
re-exported here.

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
from suite.models.embedding_space import (l2_projection_scale, normalize_gradient, per_example_norm, project,
                                          token_mask)

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
