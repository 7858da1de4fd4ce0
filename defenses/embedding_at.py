"""Embedding-space adversarial training: PGD, FreeLB, FreeLB++ and TA-VAT.

All four perturb ``model.embed(batch)`` on real tokens (``attention_mask == 1``) and share one
inner maximisation, :meth:`EmbeddingAT.ascend`: a start ``delta_0`` and ``k`` ascent steps that
each take one forward/backward pass at ``x + delta_{t-1}`` and return the per-step increments
``delta_t - delta_{t-1}`` (adaptive_at Eq. 3/5/6 write ``x_t = x_0 + sum_i delta_i``). The methods
differ in the start, the step rule and what the parameters are trained on:

* ``pgd`` (Madry et al. 2018; adaptive_at §3 Eq. 5-7, Table 6 "L(Θ, x + δ_k, y)"): ``k`` ascent
  steps (``alpha * g / ||g||_2`` per example, projection on the ε-ball after every step) without
  parameter gradients, then the parameters descend on the cross-entropy at the final
  perturbation only. No clean loss is added (adaptive_at Table 6; TextDefender's PGD-K trains on
  the adversarial batch alone).
* ``freelb`` (Zhu et al. 2020, Alg. 1; adaptive_at Eq. 9): the ``k`` passes are at
  ``delta_0 .. delta_{k-1}``; each pass back-propagates ``loss / k`` into the parameters, so the
  parameter gradient is the average of the per-step gradients, and its ``delta`` gradient gives
  the next ascent step. ``freelb++`` (Li et al. 2021, "Searching for an effective defender",
  cited as FreeLB++ in wetar_reweighting §4.2) is FreeLB with 10 steps and no norm bound.
* ``tavat`` (Li & Qiu 2021, TA-VAT; adaptive_at §2.2 "token-level perturbations accounting for
  the importance of tokens"): see :class:`TAVAT`.

Norms are per example over the [tokens x dim] matrix of real tokens (``defenses.perturbation``).
Random starts use a generator seeded from ``context.seed`` and ``context.global_step``.
Each config holds the settings as ``perturbation`` (:class:`~defenses.perturbation.PerturbationConfig`:
``steps`` = k, ``step_size`` = α, ``init_magnitude``, ``max_norm`` = ε, ``norm``), the names
TextDefender and FreeLB's code spell ``adv_steps``, ``adv_lr``, ``adv_init_mag``, ``adv_max_norm``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from defenses.base import Defense, DefenseConfig, TrainingContext, register_defense
from defenses.perturbation import (PerturbationConfig, l2_projection_scale, normalize_gradient, per_example_norm,
                                   project, random_init, step_generator, token_mask)
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier


@dataclass(frozen=True)
class PGDConfig(DefenseConfig):
    """PGD-k adversarial training (adaptive_at §5.3: step size α = 0.04; Table 10: k = 5).

    ``init_magnitude`` 0.05 is TextDefender's default random start (adaptive_at §5.3 builds on
    it); ``max_norm`` null is ``steps * step_size`` (adaptive_at Fig. 3, after [15]), 0 unbounded.
    """

    perturbation: PerturbationConfig = PerturbationConfig(steps=5, step_size=0.04, init_magnitude=0.05,
                                                          max_norm=None)

    def __post_init__(self) -> None:
        self.perturbation.check("pgd")


@dataclass(frozen=True)
class FreeLBConfig(DefenseConfig):
    """FreeLB (wetar_reweighting Table 3 / carl_rar Table 1, SST-2 column: 2 steps, lr 0.03, ε = 0).

    ``init_magnitude`` 0.05: TextDefender's default (carl_rar Table 1 tunes γ per dataset);
    ``max_norm`` 0: unbounded (carl_rar Table 1, all datasets).
    """

    perturbation: PerturbationConfig = PerturbationConfig(steps=2, step_size=0.03, init_magnitude=0.05, max_norm=0.0)

    def __post_init__(self) -> None:
        self.perturbation.check("freelb")


@dataclass(frozen=True)
class FreeLBPlusPlusConfig(FreeLBConfig):
    """FreeLB++ (Li et al. 2021; wetar_reweighting Table 3): 10 ascent steps, no norm bound."""

    perturbation: PerturbationConfig = PerturbationConfig(steps=10, step_size=0.03, init_magnitude=0.05, max_norm=0.0)

    def __post_init__(self) -> None:
        self.perturbation.check("freelb++")


def check_tavat(name: str, perturbation: PerturbationConfig) -> None:
    """TA-VAT's settings: as every embedding AT, and L2 only (its token-level step is L2)."""
    perturbation.check(name)
    if perturbation.norm != "l2":
        raise SuiteError(f"{name}: perturbation.norm must be l2 (TA-VAT's sentence and token-level steps are L2), "
                         f"got {perturbation.norm!r}")


@dataclass(frozen=True)
class TAVATConfig(DefenseConfig):
    """TA-VAT, SST-2 settings of the authors' release (LinyangLee/Token-Aware-VAT README), which
    are also TextDefender's defaults: 2 steps, lr 0.05, init 0.2, max norm 0.5 (0: unbounded)."""

    perturbation: PerturbationConfig = PerturbationConfig(steps=2, step_size=0.05, init_magnitude=0.2, max_norm=0.5)

    def __post_init__(self) -> None:
        check_tavat("tavat", self.perturbation)


@dataclass
class Trajectory:
    """One inner maximisation: ``x_t = x + init + sum(increments[:t])`` (adaptive_at Eq. 6).

    ``losses[t]`` is the cross-entropy of the ascent pass at ``x_t`` (t = 0 .. k-1); every tensor is
    detached and zero on padding.
    """

    init: torch.Tensor
    increments: list[torch.Tensor]
    losses: list[float]

    @property
    def total(self) -> torch.Tensor:
        """The final perturbation ``delta_0 + sum_t delta_t``."""
        return self.init + torch.stack(self.increments).sum(dim=0)


def adversarial_loss(model: TextClassifier, embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of ``batch`` run from (perturbed) input embeddings."""
    return F.cross_entropy(model.forward_embeddings(embeds, batch).logits, batch["labels"])



class EmbeddingAT(Defense):
    """The shared inner maximisation; subclasses define the start, the step and the outer loss."""

    Config: ClassVar[type[DefenseConfig]] = PGDConfig

    @property
    def cfg(self) -> Any:
        """``self.config``, typed loosely: one of the ``*Config`` classes of this module (or a subclass)."""
        return self.config

    @property
    def perturbation(self) -> PerturbationConfig:
        return self.cfg.perturbation

    @property
    def steps(self) -> int:
        return int(self.perturbation.steps)

    def max_norm(self) -> float:
        """The ε of the projection; ``<= 0`` means unbounded."""
        return float(self.perturbation.max_norm or 0.0)

    @property
    def norm(self) -> str:
        return str(self.perturbation.norm)

    # --- the pieces a method defines ------------------------------------------------------------
    def start(self, batch: Batch, clean: torch.Tensor, mask: torch.Tensor,
              context: TrainingContext) -> tuple[torch.Tensor, Any]:
        """``delta_0`` (FreeLB's random start, projected) and the method's own state."""
        delta = random_init(clean, mask, self.perturbation.init_magnitude, self.norm, step_generator(context))
        return project(delta, self.max_norm(), self.norm), None

    def step(self, delta: torch.Tensor, state: Any, grad: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """One ascent step (adaptive_at Eq. 5): ``proj(delta + alpha * norm(g))``."""
        lr = self.perturbation.step_size
        return project(delta + lr * normalize_gradient(grad, self.norm) * mask, self.max_norm(), self.norm), state

    def finish(self, batch: Batch, mask: torch.Tensor, state: Any) -> None:
        """Called with the state of the last ascent pass (TA-VAT updates its vocabulary)."""

    # --- the inner maximisation -------------------------------------------------------------------
    def ascend(self, batch: Batch, context: TrainingContext, free_gradients: bool = False) -> Trajectory:
        """Run ``k`` ascent passes; return ``delta_0``, the ``k`` increments and the pass losses.

        With ``free_gradients`` every pass also back-propagates ``loss / k`` into the parameters
        (FreeLB Alg. 1: the parameter gradient is accumulated "for free" during the ascent);
        without, only the gradient with respect to ``delta`` is computed.
        """
        k = self.steps
        with torch.no_grad():
            clean = self.model.embed(batch)
        mask = token_mask(batch, clean)
        delta, state = self.start(batch, clean, mask, context)
        init, increments, losses = delta, [], []
        for t in range(k):
            leaf = delta.detach().requires_grad_()
            embeds = self.model.embed(batch) if free_gradients else clean
            loss = adversarial_loss(self.model, embeds + leaf, batch)
            if free_gradients:
                (loss / k).backward()
                grad = leaf.grad * k
            else:
                (grad,) = torch.autograd.grad(loss, leaf)
            losses.append(float(loss.detach()))
            if t == k - 1:
                self.finish(batch, mask, state)
            with torch.no_grad():
                new_delta, state = self.step(delta, state, grad * mask, mask)
                increments.append(new_delta - delta)
            delta = new_delta
        return Trajectory(init=init.detach(), increments=[d.detach() for d in increments], losses=losses)


@register_defense("pgd")
class PGD(EmbeddingAT):
    """Madry et al. 2018 in embedding space, as used in adaptive_at §3 (Eq. 5-7) and robust_instances."""

    Config = PGDConfig
    reference = "Madry et al. 2018; adaptive_at §3 Eq. 5-7, Table 6"

    def max_norm(self) -> float:
        eps = self.perturbation.max_norm
        return float(self.steps * self.perturbation.step_size if eps is None else eps)

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        """Ascend without parameter gradients, then descend on ``L(x + delta_k)`` alone."""
        trajectory = self.ascend(batch, context)
        loss = adversarial_loss(self.model, self.model.embed(batch) + trajectory.total, batch)
        loss.backward()
        return {"loss": float(loss.detach())}


@register_defense("freelb")
class FreeLB(EmbeddingAT):
    """Zhu et al. 2020, Alg. 1: minimise ``(1/k) sum_{t=1..k} L(x + delta_{t-1})``.

    adaptive_at Eq. 9 writes the same average over ``x_0 + r^t``, t = 1 .. k, i.e. one step later;
    the implementation follows Alg. 1 (and TextDefender), where the k-th ascent step is not used.
    """

    Config = FreeLBConfig
    reference = "Zhu et al. 2020 Alg. 1; wetar_reweighting Table 3; carl_rar Table 1"

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        trajectory = self.ascend(batch, context, free_gradients=True)
        return {"loss": sum(trajectory.losses) / len(trajectory.losses)}


@register_defense("freelb++")
class FreeLBPlusPlus(FreeLB):
    """FreeLB with 10 ascent steps and an unbounded norm (Li et al. 2021)."""

    Config = FreeLBPlusPlusConfig
    reference = "Li et al. 2021 (TextDefender); wetar_reweighting Table 3"


@register_defense("tavat")
class TAVAT(FreeLB):
    """Token-Aware Virtual Adversarial Training (Li & Qiu 2021), after the authors' release.

    The perturbation is ``delta = delta_lb + delta_tok``:

    * ``delta_lb`` is FreeLB's sentence-level perturbation (random start, L2-normalised step);
    * ``delta_tok`` starts from a *global perturbation vocabulary* ``V`` (one row per token id,
      initialised ``U(-1, 1) * init_magnitude / sqrt(D)``) that accumulates, for every token of every
      batch, the token perturbation of the batch's last ascent pass (``V[id] += delta_tok``);
    * token-level normalisation: each token steps ``alpha * g_j / ||g_j||`` along its own
      gradient, then is rescaled by ``||delta_tok_j|| / max_i ||delta_tok_i||`` (a token-level ball
      whose radius follows the token's relative perturbation), before ``delta_lb + delta_tok`` is
      projected on the sentence-level ε-ball (``perturbation.max_norm``).

    The parameters are trained as in FreeLB (``training_step`` is FreeLB's), on
    ``(1/k) sum_t L(x + delta_{t-1})``.

    Simplifications, with reasons: (1) the vocabulary rows of a sentence are scaled to Frobenius
    norm ``init_magnitude`` per example, where the release divides by the norm of the whole batch (which
    ties one example's start to its batch-mates and to the batch size); (2) padding positions get
    no perturbation and no vocabulary update (the release relies on BERT's attention mask, which
    the word-level CNN/LSTM do not have); (3) each pass's loss is divided by ``k`` as in FreeLB
    Alg. 1, on which TA-VAT builds, where the release sums the ``k`` losses; (4) ``V`` grows to the
    largest token id seen, so no backbone has to expose its vocabulary size.
    """

    Config = TAVATConfig
    reference = "Li & Qiu 2021 (TA-VAT); adaptive_at §2.2, §5.2"

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.vocabulary: torch.Tensor | None = None
        self._vocab_generator: torch.Generator | None = None

    def on_train_start(self, context: TrainingContext) -> None:
        self.vocabulary, self._vocab_generator = None, torch.Generator().manual_seed(int(context.seed))

    def vocabulary_rows(self, ids: torch.Tensor, dim: int, context: TrainingContext) -> torch.Tensor:
        """``V[ids]``, first growing ``V`` with fresh random rows for ids not yet covered."""
        if self._vocab_generator is None:
            self._vocab_generator = torch.Generator().manual_seed(int(context.seed))
        need = int(ids.max()) + 1
        have = 0 if self.vocabulary is None else self.vocabulary.shape[0]
        if need > have:
            noise = torch.rand(need - have, dim, generator=self._vocab_generator) * 2 - 1
            rows = (noise * self.perturbation.init_magnitude / math.sqrt(dim)).to(ids.device)
            self.vocabulary = rows if self.vocabulary is None else torch.cat([self.vocabulary, rows])
        assert self.vocabulary is not None
        return self.vocabulary[ids]

    def start(self, batch: Batch, clean: torch.Tensor, mask: torch.Tensor,
              context: TrainingContext) -> tuple[torch.Tensor, Any]:
        magnitude = self.perturbation.init_magnitude
        delta_lb = random_init(clean, mask, magnitude, "l2", step_generator(context))
        rows = self.vocabulary_rows(batch["input_ids"], clean.shape[-1], context).to(clean.dtype) * mask
        delta_tok = rows * (magnitude / per_example_norm(rows))
        return self._project(delta_lb, delta_tok)

    def step(self, delta: torch.Tensor, state: Any, grad: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        delta_lb, delta_tok = state
        lr = self.perturbation.step_size
        delta_lb = delta_lb + lr * normalize_gradient(grad) * mask
        delta_tok = token_level_step(delta_tok, grad, lr, mask)
        return self._project(delta_lb, delta_tok)

    def _project(self, delta_lb: torch.Tensor, delta_tok: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Rescale both parts so that ``||delta_lb + delta_tok|| <= max_norm`` per example."""
        total = delta_lb + delta_tok
        eps = self.max_norm()
        if eps > 0:
            scale = l2_projection_scale(total, eps)
            delta_lb, delta_tok, total = delta_lb * scale, delta_tok * scale, total * scale
        return total, (delta_lb, delta_tok)

    def finish(self, batch: Batch, mask: torch.Tensor, state: Any) -> None:
        """Accumulate the last pass's token perturbations into ``V`` (real tokens only)."""
        _, delta_tok = state
        real = batch["attention_mask"].bool()
        assert self.vocabulary is not None
        self.vocabulary.index_put_((batch["input_ids"][real],), delta_tok.detach()[real].to(self.vocabulary.dtype),
                                   accumulate=True)


def token_level_step(delta_tok: torch.Tensor, grad: torch.Tensor, lr: float, mask: torch.Tensor) -> torch.Tensor:
    """TA-VAT's token-level update: ``d_j + lr * g_j / ||g_j||`` for every token ``j``, then
    ``d_j *= ||d_j|| / max_i ||d_i||`` over the sentence's real tokens (padding stays zero)."""
    token_norm = grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    delta_tok = (delta_tok + lr * grad / token_norm) * mask
    norms = delta_tok.norm(dim=-1, keepdim=True)  # [B, T, 1]
    largest = norms.amax(dim=1, keepdim=True).clamp_min(1e-12)
    return delta_tok * (norms / largest)
