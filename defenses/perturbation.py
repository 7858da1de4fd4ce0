"""Shared arithmetic of embedding-space perturbations (used by every adversarial-training defense).

All perturbations live in the space of ``model.embed(batch)`` (``[B, T, D]``) and touch only
real tokens (``attention_mask == 1``). Norms are per example, over the whole [T x D] matrix of
real tokens, as in FreeLB (Zhu et al. 2020, Alg. 1) and TA-VAT; the L2 ball is the default,
``linf`` clips element-wise (Madry et al. 2018).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from suite.models.base import Batch

if TYPE_CHECKING:
    from defenses.base import TrainingContext


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
    return delta * torch.clamp(epsilon / per_example_norm(delta), max=1.0)


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
