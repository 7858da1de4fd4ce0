"""TRADES in embedding space (Zhang et al. 2019, ICML), the baseline of adaptive_at §5.2.1.

Objective (TRADES Eq. 5; adaptive_at Table 6, row "TRADES")::

    L(x, y) = CE(f(x), y) + beta * KL( f(x) || f(x + delta) ),
    delta   = argmax_{||delta|| <= eps} KL( f(x) || f(x + delta) )

with ``f`` the softmax output and ``x`` the input embeddings (``model.embed(batch)``). The
inner maximisation is TRADES Alg. 1, moved from pixels to embeddings: a small random start
(TRADES: ``0.001 * N(0, I)``; here the suite's shared uniform start,
``U(-init_magnitude, init_magnitude)`` per coordinate on real tokens), then ``steps`` ascent steps on the KL, each
``delta <- Proj_eps(delta + step_size * g / ||g||_2)`` (the L2 form of the suite's other
embedding-space AT; TRADES uses sign steps in its L_inf pixel ball, ``norm: linf`` selects that).
The settings are the config's ``perturbation`` (:class:`~defenses.perturbation.PerturbationConfig`):
``steps`` = K, ``step_size``, ``init_magnitude`` (the start's scale), ``max_norm`` = ε (> 0), ``norm``.

Defaults (adaptive_at §5.3): the KL weight is 0.5 — adaptive_at calls it "the weighting factor
α in TRADES" (§5.3) and λ in Table 6; it multiplies the KL term, i.e. it is TRADES's own
``beta`` (= 1/λ in TRADES's notation), not a convex mix of the two losses. The adversarial
settings are those adaptive_at shares across all its AT baselines ("consistent", §5.3): step
size 0.04, k = 5 iterations (Table 10), and a maximal perturbation size of k * step = 0.2
(§7.4, Fig. 3, "following [15]" = TextDefender).

Dropout: the clean, ascent and adversarial forward passes of one batch share one dropout
realisation (the RNG state is replayed), so the KL measures what ``delta`` changes and is
exactly zero at ``delta = 0`` even in training mode. TRADES's reference code attacks in eval
mode because of batch norm; the suite's backbones have none, and a shared realisation keeps
the ascent maximising the very function that is regularised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from defenses.base import Defense, DefenseConfig, TrainingContext, register_defense
from defenses.perturbation import (PerturbationConfig, normalize_gradient, project, random_init, step_generator,
                                   token_mask)
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier

Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(softmax(p) || softmax(q))`` (``[B]``), computed from log-probabilities."""
    log_p = F.log_softmax(p_logits, dim=-1)
    log_q = F.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def check_divergence_perturbation(where: str, perturbation: PerturbationConfig) -> None:
    """The limits of :func:`ascend_divergence`: ``steps >= 0`` (0: the random start only),
    ``step_size >= 0`` and a bounded ball (``max_norm > 0``)."""
    perturbation.check(where, min_steps=0, positive_step_size=False, bounded=True)


class SharedDropout:
    """Replays the RNG state captured at construction, so each forward pass run after
    ``replay()`` draws the same dropout masks (CPU generator, and the CUDA one on GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)



def ascend_divergence(model: TextClassifier, embeds: torch.Tensor, batch: Batch, target_logits: torch.Tensor,
                      divergence: Divergence, perturbation: PerturbationConfig, *,
                      generator: torch.Generator | None = None,
                      before_forward: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Projected gradient ascent of ``divergence(target_logits, f(embeds + delta))`` in ``delta``.

    Random start ``U(-init_magnitude, init_magnitude)`` per real-token coordinate, projected on
    the ``max_norm`` (ε) ball; then ``steps`` times ``delta <- Proj(delta + step_size * normalise(grad))``
    (TRADES Alg. 1 lines 4-6; SMART Alg. 1 lines 4-7). Padding stays zero. Only ``delta``
    is differentiated: parameter ``.grad`` is left untouched. Returns a detached ``delta``.
    """
    epsilon, norm, step_size = perturbation.max_norm, perturbation.norm, perturbation.step_size
    embeds, target_logits = embeds.detach(), target_logits.detach()
    mask = token_mask(batch, embeds)
    delta = project(random_init(embeds, mask, perturbation.init_magnitude, "linf", generator), epsilon, norm) * mask
    for _ in range(perturbation.steps):
        delta.requires_grad_(True)
        before_forward()
        logits = model.forward_embeddings(embeds + delta, batch).logits
        # the sum keeps each example's gradient unscaled by the batch size (it is normalised anyway)
        (grad,) = torch.autograd.grad(divergence(target_logits, logits).sum(), delta)
        with torch.no_grad():
            delta = project(delta + step_size * normalize_gradient(grad * mask, norm), epsilon, norm) * mask
    return delta.detach()


@dataclass(frozen=True)
class TradesConfig(DefenseConfig):
    """``beta``: weight of the KL term (adaptive_at §5.3 "factor 0.5"). ``perturbation``: k = 5
    ascent steps (adaptive_at Table 10) of size 0.04 (§5.3), ball radius ε = k * step_size = 0.2
    (§7.4), random start 1e-3 per coordinate (TRADES Alg. 1: 0.001 * N(0, I)), L2."""

    beta: float = 0.5
    perturbation: PerturbationConfig = PerturbationConfig(steps=5, step_size=0.04, init_magnitude=1e-3, max_norm=0.2)

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise SuiteError(f"trades: beta must be >= 0, got {self.beta}")
        check_divergence_perturbation("trades", self.perturbation)


@register_defense("trades")
class Trades(Defense):
    """CE on clean inputs + beta * KL(f(x) || f(x + delta)), delta maximising the KL."""

    Config = TradesConfig
    config: TradesConfig
    reference = "Zhang et al. 2019 (TRADES), as the adaptive_at §5 baseline"

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self._sums = {"ce": 0.0, "kl": 0.0, "n": 0.0}

    def on_epoch_start(self, context: TrainingContext) -> None:
        self._sums = {"ce": 0.0, "kl": 0.0, "n": 0.0}

    def on_epoch_end(self, context: TrainingContext) -> None:
        n = max(1.0, self._sums["n"])
        context.log_metric("trades.ce", self._sums["ce"] / n, context.epoch + 1)
        context.log_metric("trades.kl", self._sums["kl"] / n, context.epoch + 1)

    def perturbation(self, batch: Batch, context: TrainingContext, embeds: torch.Tensor,
                     clean_logits: torch.Tensor, noise: SharedDropout | None = None) -> torch.Tensor:
        """The inner maximisation: ``delta`` with ``||delta|| <= max_norm`` maximising the KL."""
        return ascend_divergence(self.model, embeds, batch, clean_logits, kl_divergence, self.config.perturbation,
                                 generator=step_generator(context),
                                 before_forward=noise.replay if noise is not None else (lambda: None))

    def loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        model = self.model
        embeds = model.embed(batch)
        noise = SharedDropout(embeds.device)
        clean = model.forward_embeddings(embeds, batch).logits
        delta = self.perturbation(batch, context, embeds, clean, noise)
        noise.replay()
        adversarial = model.forward_embeddings(embeds + delta, batch).logits
        ce = F.cross_entropy(clean, batch["labels"])
        kl = kl_divergence(clean, adversarial).mean()
        self._sums["ce"] += float(ce.detach())
        self._sums["kl"] += float(kl.detach())
        self._sums["n"] += 1
        return ce + self.config.beta * kl
