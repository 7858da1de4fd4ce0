"""InfoBERT (Wang et al. 2021, ICLR): FreeLB-style adversarial training plus two mutual-information
regularisers, the Information Bottleneck (IB) and the Anchored Feature (AF) regulariser.

The paper's objective (§3, the final InfoBERT objective) is, per example::

    max_theta  I(Y; T) - beta * sum_i I(X_i; T_i) + alpha * sum_j I(T_{k_j}; Z)

with ``X_i`` the input embedding of token ``i``, ``T_i`` its local (token-level) feature, ``Z`` the
global sentence representation and ``k_j`` the *anchored* tokens: those whose adversarial
gradient norm lies between the ``cl`` and ``ch`` quantiles of the sentence (large enough to be
useful, not among the most perturbed, hence robust; §3.3, "local anchored feature extraction").
``I(Y; T)`` is the task cross-entropy, here on FreeLB's adversarial inputs: the reference code
(AI-secure/InfoBERT, ``local_robust_trainer._adv_training_step``; also TextDefender's
``infobert`` trainer that adaptive_at §5.3 uses) runs ``adv_steps`` FreeLB ascent steps and at
every step adds ``(CE + IB) / K`` and ``-alpha * AF / K`` to the accumulated parameter gradients.

What the suite's interface allows, and the simplifications (each with its reason):

* **Local features.** ``TextClassifier`` exposes the input embeddings and one pooled feature
  vector, not per-token hidden states (a word CNN has none that align with tokens). As the
  reference code does for its AF term (it pairs ``hidden_states[0]``, the embedding-layer output
  at the anchored positions, with the last layer's [CLS]), the local features are the perturbed
  input embeddings ``embed(batch) + delta`` at real tokens and the global feature ``Z`` is
  ``ModelOutput.features`` (CNN: max-pooled maps; LSTM: last state; HF: last-layer [CLS]).
  For HF models ``embed`` is the word embedding before position embeddings and LayerNorm,
  where the reference code's ``hidden_states[0]`` is after them.
* **IB term.** Without ``T_i`` the per-token IB term becomes ``beta * mean_i I(X_i; Z)``: the
  information the sentence representation keeps about each input token, which the bottleneck
  compresses. It is estimated with the same InfoNCE estimator as the AF term, by a separate critic
  that is fitted to *maximise* the bound (a bound the critic does not fit says nothing), while the
  model *minimises* it. The reference code instead uses ``CLUBv2`` (``mi_version`` 6), whose value is
  ``beta * mean_i ||e_i - e_pi(i)||^2 / 2`` over randomly paired token embeddings: it does not
  depend on the representation at all, so it is not followed here. Net effect on anchored
  tokens: they are both compressed (weight ``beta`` averaged over all tokens) and anchored
  (weight ``alpha`` averaged over the anchored ~40%), i.e. the bottleneck drops the information
  of the non-anchored tokens first.
* **InfoNCE estimator** (Oord et al. 2018), exactly the reference ``InfoNCE`` module: critic
  ``f(x, y) = softplus(w2 . relu(W1 [x; y] + b1) + b2)`` with 300 hidden units and
  ``I_NCE = mean_i f(x_i, y_i) - mean_i logsumexp_j f(x_j, y_i) + log N`` (``<= log N``), on the
  shuffled (local, global) pairs in chunks of the training batch size, averaged over chunks.
* **Critic optimisation.** As in the reference code, the critics are optimised by the model's
  optimiser: they are the defense's training-only ``extra_modules`` (trainer interface v2), so
  they get the model's learning rate, schedule, weight decay and gradient clipping (the global
  norm covers model and critics); ``critic_lr > 0`` sets their param group's base learning rate
  (scheduled like the model's). They are built in ``on_train_start`` (sizes from one probe
  forward pass, weights seeded from the run seed without touching the global RNG stream), are
  not saved with the checkpoint and play no role at evaluation or attack time. Version 2: until
  version 1 the critics had a private AdamW (constant LR; with ``critic_lr``, no weight decay),
  stepped inside ``training_step`` before the model's step and unclipped.
* **Perturbation** (shared ``defenses.perturbation``): FreeLB's uniform random start, L2-normalised
  ascent steps, unbounded by default (``perturbation.max_norm = 0``), as the reference run script; the
  ascent direction is the gradient of the step's ``CE + beta * IB`` (as in the reference code),
  restricted to real tokens (padding matters for the word CNN). The loop is written here rather
  than taken from ``defenses.embedding_at`` because the regularisers need each ascent pass's
  features and ``delta`` gradient, which ``EmbeddingAT.ascend`` does not expose; it uses the same
  start, step rule and per-step generator, and with ``alpha = beta = 0`` its parameter gradients
  equal ``freelb``'s with the same settings (tested).

The InfoBERT paper is not among the suite's papers (/work/shared/papers): the objective above is
the paper's, every implementation detail is taken from the reference code.

Defaults: the reference code's (ANLI README run line; TextDefender's ``infobert`` trainer):
``adv_steps 3, adv_lr 4e-2, adv_init_mag 8e-2, adv_max_norm 0, alpha 5e-3, beta 5e-3, cl 0.5,
ch 0.9``; the ``adv_*`` settings are the config's ``perturbation`` (``steps``, ``step_size``,
``init_magnitude``, ``max_norm``, :class:`~defenses.perturbation.PerturbationConfig`). The five
papers of this suite give no InfoBERT hyper-parameters; adaptive_at §1 confirms ``k = 3`` for InfoBERT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Defense, DefenseConfig, TrainingContext, register_defense
from defenses.perturbation import (PerturbationConfig, normalize_gradient, project, random_init, step_generator,
                                   token_mask)
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier
from suite.models.batching import make_batch


class InfoNCECritic(nn.Module):
    """The reference InfoNCE critic ``f(x, y) = softplus(MLP([x; y]))`` (one hidden ReLU layer)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 300) -> None:
        super().__init__()
        self.x_dim = x_dim
        self.first = nn.Linear(x_dim + y_dim, hidden)
        self.second = nn.Linear(hidden, 1)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N, N]`` matrix ``s[i, j] = f(x_j, y_i)``; the first layer is applied to ``x`` and ``y``
        separately (``W [x; y] = W_x x + W_y y``), so no ``[N, N, dx + dy]`` tensor is built."""
        w_x, w_y = self.first.weight[:, : self.x_dim], self.first.weight[:, self.x_dim:]
        hidden = torch.relu((x @ w_x.T)[None, :, :] + (y @ w_y.T)[:, None, :] + self.first.bias)
        return F.softplus(self.second(hidden)).squeeze(-1)


def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE lower bound from a score matrix ``s[i, j] = f(x_j, y_i)`` (positives on the diagonal):
    ``mean_i s_ii - mean_i logsumexp_j s_ij + log N``, never above ``log N``."""
    n = scores.shape[0]
    return scores.diagonal().mean() - (scores.logsumexp(dim=1).mean() - math.log(n))


def chunked_info_nce(critic: InfoNCECritic, x: torch.Tensor, y: torch.Tensor, chunk: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle the ``N`` pairs ``(x_i, y_i)``, estimate InfoNCE on chunks of ``chunk`` pairs (the
    other pairs of a chunk are the negatives) and average over chunks, as the reference code."""
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    x, y = x[order], y[order]
    bounds = [info_nce(critic.scores(x[i:i + chunk], y[i:i + chunk])) for i in range(0, x.shape[0], chunk)]
    return torch.stack(bounds).mean()


def anchored_positions(grad: torch.Tensor, attention_mask: torch.Tensor, cl: float,
                       ch: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the anchored tokens (InfoBERT §3.3; reference ``feature_ranking``).

    Per sentence of ``n`` real tokens, sort them by the L2 norm of ``grad`` (``[B, T, D]``) in
    ascending order and keep ranks ``ceil(n * cl) .. ceil(n * ch) - 1``.
    """
    real = attention_mask.bool()
    norms = grad.detach().norm(dim=-1).masked_fill(~real, float("inf"))  # padding ranks last
    order = norms.argsort(dim=1, stable=True)  # [B, T]: positions by ascending norm
    n = real.sum(dim=1).to(torch.float64)  # float64 so ceil(n * cl) matches Python's math.ceil
    low, high = torch.ceil(n * cl).long(), torch.ceil(n * ch).long()
    rank = torch.arange(order.shape[1], device=order.device)[None, :]
    chosen = (rank >= low[:, None]) & (rank < high[:, None])
    return chosen.nonzero()[:, 0], order[chosen]



@dataclass(frozen=True)
class InfoBertConfig(DefenseConfig):
    alpha: float = 5e-3  # weight of the anchored-feature regulariser (reference code)
    beta: float = 5e-3  # weight of the information-bottleneck regulariser (reference code)
    cl: float = 0.5  # lower quantile of the anchored band (reference code)
    ch: float = 0.9  # upper quantile of the anchored band (reference code)
    # FreeLB ascent: K = 3 steps (reference code; adaptive_at §1) of size 4e-2, random start 8e-2,
    # L2 (or linf) radius 0: unbounded (reference code)
    perturbation: PerturbationConfig = PerturbationConfig(steps=3, step_size=4e-2, init_magnitude=8e-2, max_norm=0.0)
    critic_hidden: int = 300  # hidden units of the InfoNCE critics (reference code)
    critic_lr: float = 0.0  # > 0: the critics' param-group learning rate; 0: the model's

    def __post_init__(self) -> None:
        self.perturbation.check("infobert", positive_step_size=False)
        if not 0.0 <= self.cl <= self.ch <= 1.0:
            raise SuiteError(f"infobert: need 0 <= cl <= ch <= 1, got cl={self.cl}, ch={self.ch}")
        for name in ("alpha", "beta", "critic_lr"):
            if getattr(self, name) < 0:
                raise SuiteError(f"infobert: {name} must be >= 0, got {getattr(self, name)}")
        if self.critic_hidden < 1:
            raise SuiteError(f"infobert: critic_hidden must be >= 1, got {self.critic_hidden}")


@register_defense("infobert")
class InfoBert(Defense):
    """FreeLB + beta * IB (InfoNCE of token embedding vs sentence feature, minimised)
    - alpha * AF (InfoNCE of anchored token embedding vs sentence feature, maximised)."""

    Config = InfoBertConfig
    config: InfoBertConfig
    reference = "Wang et al. 2021 (InfoBERT, ICLR), reference code AI-secure/InfoBERT"
    version: ClassVar[int] = 2  # 2: critics in the trainer's optimiser (scheduled, clipped), see the docstring

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.ib_critic: InfoNCECritic | None = None
        self.af_critic: InfoNCECritic | None = None
        self._sums = self._zero_sums()

    # --- the critics: training-only extra modules -----------------------------------------------------
    def extra_modules(self) -> dict[str, nn.Module]:
        return {name: critic for name, critic in (("ib_critic", self.ib_critic), ("af_critic", self.af_critic))
                if critic is not None}

    def extra_module_options(self, name: str) -> dict[str, float]:
        return {"lr": self.config.critic_lr} if self.config.critic_lr > 0 else {}

    def on_train_start(self, context: TrainingContext) -> None:
        """Build the critics before the trainer builds its optimiser; their input sizes come from one
        forward pass on a training example (eval mode, no gradient, RNG state restored)."""
        if not (self.config.alpha > 0 or self.config.beta > 0) or not context.train:
            return
        model = self.model
        was_training = model.training
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            try:
                batch = make_batch(model, context.train[:1], context.device)
                embeds = model.embed(batch)
                features = model.forward_embeddings(embeds, batch, return_features=True).features
            finally:
                model.train(was_training)
        if features is None:
            raise SuiteError(f"infobert: backbone {type(model).__name__} returns no features")
        self._ensure_critics(embeds.shape[-1], features.shape[-1], context.device, context)

    # --- bookkeeping ----------------------------------------------------------------------------------
    @staticmethod
    def _zero_sums() -> dict[str, float]:
        return {"ce": 0.0, "ib_mi": 0.0, "af_mi": 0.0, "anchored": 0.0, "tokens": 0.0, "n": 0.0}

    def on_epoch_start(self, context: TrainingContext) -> None:
        self._sums = self._zero_sums()

    def on_epoch_end(self, context: TrainingContext) -> None:
        n, step = max(1.0, self._sums["n"]), context.epoch + 1
        context.log_metric("infobert.ce", self._sums["ce"] / n, step)
        if self.config.beta > 0:
            context.log_metric("infobert.ib_mi", self._sums["ib_mi"] / n, step)
        if self.config.alpha > 0:
            context.log_metric("infobert.af_mi", self._sums["af_mi"] / n, step)
            context.log_metric("infobert.anchored_fraction",
                               self._sums["anchored"] / max(1.0, self._sums["tokens"]), step)

    def _ensure_critics(self, x_dim: int, y_dim: int, device: torch.device, context: TrainingContext) -> None:
        """Build the critics once (their sizes are the backbone's), seeded from the run seed without
        consuming the global RNG stream that drives dropout. The trainer builds them in
        ``on_train_start``; a ``training_step`` called outside the trainer builds them on first use
        (the caller then optimises ``extra_modules()`` itself)."""
        if self.ib_critic is not None or self.af_critic is not None:
            return
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            if cfg.beta > 0:
                self.ib_critic = InfoNCECritic(x_dim, y_dim, cfg.critic_hidden).to(device)
            if cfg.alpha > 0:
                self.af_critic = InfoNCECritic(x_dim, y_dim, cfg.critic_hidden).to(device)

    # --- the training step ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        cfg, model = self.config, self.model
        perturbation = cfg.perturbation
        labels, k = batch["labels"], perturbation.steps
        chunk = int(labels.shape[0])
        generator = step_generator(context)
        need_mi = cfg.alpha > 0 or cfg.beta > 0
        real = batch["attention_mask"].bool()
        delta: torch.Tensor | None = None
        ce_sum = ib_sum = af_sum = 0.0
        anchored = 0
        for step in range(k):
            embeds = model.embed(batch)  # re-embedded each step: backward frees the graph
            if delta is None:  # FreeLB's random start
                mask = token_mask(batch, embeds)
                delta = project(random_init(embeds.detach(), mask, perturbation.init_magnitude, perturbation.norm,
                                            generator), perturbation.max_norm, perturbation.norm)
            delta.requires_grad_(True)
            inputs = embeds + delta
            out = model.forward_embeddings(inputs, batch, return_features=need_mi)
            ce = F.cross_entropy(out.logits, labels)
            loss = ce / k
            if need_mi:
                if out.features is None:
                    raise SuiteError(f"infobert: backbone {type(model).__name__} returns no features")
                self._ensure_critics(inputs.shape[-1], out.features.shape[-1], inputs.device, context)
            if self.ib_critic is not None:
                token_rows = real.nonzero()[:, 0]
                ib = chunked_info_nce(self.ib_critic, inputs[real], out.features[token_rows], chunk, generator)
                loss = loss + cfg.beta * ib / k
                ib_sum += float(ib.detach()) / k
            loss.backward(retain_graph=self.af_critic is not None)
            grad = delta.grad.detach()
            if self.af_critic is not None:
                rows, cols = anchored_positions(grad, batch["attention_mask"], cfg.cl, cfg.ch)
                anchored += int(rows.numel())
                if rows.numel() > 0:
                    af = chunked_info_nce(self.af_critic, inputs[rows, cols], out.features[rows], chunk, generator)
                    (-cfg.alpha * af / k).backward()
                    af_sum += float(af.detach()) / k
            ce_sum += float(ce.detach()) / k
            if step == k - 1:
                break
            with torch.no_grad():
                delta = project(delta + perturbation.step_size * normalize_gradient(grad * mask, perturbation.norm),
                                perturbation.max_norm, perturbation.norm) * mask
        self._reverse_ib_critic_gradient()
        self._sums["ce"] += ce_sum
        self._sums["ib_mi"] += ib_sum
        self._sums["af_mi"] += af_sum
        self._sums["anchored"] += anchored / k
        self._sums["tokens"] += float(real.sum())
        self._sums["n"] += 1
        return {"loss": ce_sum, "ib_mi": ib_sum, "af_mi": af_sum}

    def _reverse_ib_critic_gradient(self) -> None:
        """The trainer's optimiser steps both critics with the model: the AF critic descends
        ``-alpha * AF`` (it ascends the bound, like the model); the IB critic's gradient is reversed
        here so that it also ascends its bound while the model descends ``beta * IB``."""
        if self.ib_critic is not None:
            for p in self.ib_critic.parameters():
                if p.grad is not None:
                    p.grad.neg_()
