"""Norms and projections in the space of ``model.embed(batch)`` (``[B, T, D]``): the one
implementation that the adversarial-training defenses (``defenses.perturbation``) and the
embedding-space attack (``attacks.embedding_pgd``) share.

Norms are per example, over the whole [T x D] matrix of real tokens, as in FreeLB (Zhu et al.
2020, Alg. 1) and TA-VAT; the L2 ball is the default, ``linf`` clips element-wise (Madry et al.
2018).
"""
from __future__ import annotations

import torch

from suite.models.base import Batch


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
