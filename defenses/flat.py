"""FLAT: feature-level adversarial training with variational word masks (Chen & Ji 2022,
/work/shared/papers/flat_feature_level_at.txt).

Objective (§3.1 Eq. 1-3, with §3.2's rewriting of L_pred)::

    min_{θ,φ}  L_pred + γ L_imp
    L_pred = E_(x,y)∼D [E_q L(f(W ⊙ x), y) − β H_q(W | x)] + E_(x',y)∼D' [E_q' L(f(W' ⊙ x'), y) − β H_q'(W' | x')]
    L_imp  = E_(x,x') [ Σ_{i: x_i ≠ x'_i} |φ_{x_i} − φ_{x'_i}| ]

* **Word masks** (§3.2 Eq. 4, §3.4): an amortised inference network — a single-layer feed-forward
  network on each word embedding (here: one tanh hidden layer of ``mask_hidden`` units, then two
  logits, drop / keep) — gives each word's keep probability ``φ_{x_i} = q(W_{x_i} = 1 | x_i)``,
  which depends on the word's embedding only ("global" importance). During training binary masks
  ``W ∼ Bernoulli(φ)`` are drawn with the straight-through Gumbel-softmax (``F.gumbel_softmax(...,
  hard=True)``, temperature ``tau``) and multiply the embeddings; at inference each embedding is
  multiplied by ``φ`` (§3.4: "In the inference stage, we multiply each word embedding and its
  global importance score"). The masked model (:class:`WordMaskClassifier`) is the trained model:
  clean accuracy, attacks and interpretations use it, and its checkpoint (mask network included)
  reloads through ``suite.models.loading``.
* **Entropy** ``H_q(W | x)``: the Bernoulli entropies of the example's word masks, averaged over
  its (non-padding) tokens (a mean, so that β does not scale with text length); the loss
  *subtracts* β H (the entropy is maximised, §3.2).
* **L_imp** (Eq. 3) over the substituted word pairs of each adversarial example, taken from its
  attack record: the TextAttack words of the original and perturbed text at the positions where
  they differ (pairs whose word counts differ contribute nothing). ``φ`` of a word is the mean keep
  probability over the word's own tokens (one token for the word-level models; its word pieces,
  without special tokens, for transformers). Per example: ``CE − β H + γ Σ |φ − φ'|`` with the
  sum empty for an original example, and the batch loss is the mean over the batch — an
  expectation over ``D ∪ D'`` in which originals have no substituted words.
* **Rounds** (§3.4): base training on ``D`` (the masked objective with no pairs), then attack the
  latest checkpoint and train on ``D ∪ D'``, ``rounds`` times, exactly as ``adv-aug``
  (``defenses.adversarial_augmentation``), whose settings FLAT shares (§5: "-adv repeats the
  attacking and training processes the same times as FLAT").

Defaults β = 0.1, γ = 0.001 (§6, the optimum for LSTM-FLAT, Textfooler, SST-2). App. E searched
lr ∈ {1e-5, 1e-3, ..., 0.1}, clip ∈ {1e-3, 1e-2, ..., 1, 5, 10}, β ∈ {0.00001, 0.1, ..., 1000},
γ ∈ {0.00001, 0.1, ..., 1000}, per model for the best test accuracy, one run per setting; the
chosen values are not published, so the suite uses the §6 defaults everywhere.
Chosen here (not in the paper): ``mask_hidden`` = 50 hidden units and ``tau`` = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from defenses.adversarial_augmentation import AdvAugConfig, AdversarialAugmentation
from defenses.base import TrainingContext, register_defense
from suite.core.errors import SuiteError
from suite.data.examples import Example
from suite.models.base import Batch, ModelOutput, TextClassifier
from suite.models.wrapped import WrappedClassifier, innermost, register_wrapper

EPS = 1e-8


def bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of Bernoulli(p), elementwise."""
    return -(p * torch.log(p + EPS) + (1 - p) * torch.log(1 - p + EPS))


@register_wrapper("flat-word-mask")
class WordMaskClassifier(WrappedClassifier):
    """A backbone whose input embeddings are multiplied by variational word masks (FLAT §3.2-3.4)."""

    def __init__(self, inner: TextClassifier, embedding_dim: int, mask_hidden: int = 50, tau: float = 1.0) -> None:
        super().__init__(inner)
        self.embedding_dim, self.mask_hidden, self.tau = int(embedding_dim), int(mask_hidden), float(tau)
        self.mask_net = nn.Sequential(nn.Linear(self.embedding_dim, self.mask_hidden), nn.Tanh(),
                                      nn.Linear(self.mask_hidden, 2))

    def settings(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "mask_hidden": self.mask_hidden, "tau": self.tau}

    def mask_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """Drop / keep logits of each token (``[B, T, 2]``), from its embedding alone."""
        return self.mask_net(embeds)

    @staticmethod
    def keep_probability(logits: torch.Tensor) -> torch.Tensor:
        """φ: the probability of keeping each token (``[B, T]``)."""
        return F.softmax(logits, dim=-1)[..., 1]

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        """Training: a straight-through Gumbel-softmax sample of ``W ∼ Bernoulli(φ)``; eval: ``φ``."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)[..., 1]
        return self.keep_probability(logits)

    def forward_masked(self, embeds: torch.Tensor, batch: Batch, logits: torch.Tensor,
                       return_features: bool = False) -> ModelOutput:
        return self.inner.forward_embeddings(embeds * self.masks(logits).unsqueeze(-1), batch,
                                             return_features=return_features)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        return self.forward_masked(embeds, batch, self.mask_logits(embeds), return_features=return_features)

    def word_importance(self, words: Sequence[str]) -> torch.Tensor:
        """φ of each word (``[N]``): the mean keep probability over the word's own tokens
        (differentiable; special tokens and padding excluded)."""
        base = innermost(self)
        batch = {k: v.to(self.device) for k, v in base.encode([(w,) for w in words]).items()}
        keep = self.keep_probability(self.mask_logits(self.inner.embed(batch)))
        mask = batch["attention_mask"].to(keep.dtype)
        tokenizer = getattr(base, "tokenizer", None)
        if tokenizer is not None:  # transformers: leave out [CLS] / [SEP] and the like
            special = torch.tensor([tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                                    for ids in batch["input_ids"].tolist()], device=keep.device)
            only = mask * (1 - special.to(keep.dtype))
            mask = torch.where(only.sum(dim=1, keepdim=True) > 0, only, mask)
        return (keep * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def importance_loss(phi_original: torch.Tensor, phi_adversarial: torch.Tensor, owner: torch.Tensor,
                    batch_size: int) -> torch.Tensor:
    """Eq. 3 per example: ``Σ |φ(x_i) − φ(x'_i)|`` over the substituted pairs that ``owner`` assigns
    to each of the ``batch_size`` examples (``[batch_size]``; 0 for an example without pairs)."""
    out = phi_original.new_zeros(batch_size)
    if owner.numel() == 0:
        return out
    return out.index_add(0, owner, (phi_original - phi_adversarial).abs())


def substituted_pairs(original: str, perturbed: str) -> list[tuple[str, str]]:
    """(original word, substitute) at each position where TextAttack's words of the two texts
    differ; empty when their word counts differ (not a word-for-word substitution)."""
    from attacks.resources import prepare_textattack_env

    prepare_textattack_env()  # TextAttack imports offline (its NLTK data from the mirror)
    from textattack.shared.utils import words_from_text

    a, b = words_from_text(original), words_from_text(perturbed)
    if len(a) != len(b):
        return []
    return [(x, y) for x, y in zip(a, b) if x != y]


@dataclass(frozen=True)
class FlatConfig(AdvAugConfig):
    beta: float = 0.1  # entropy coefficient (§6)
    gamma: float = 0.001  # L_imp coefficient (§6)
    mask_hidden: int = 50  # hidden units of the inference network (chosen here)
    tau: float = 1.0  # Gumbel-softmax temperature (chosen here)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0 or self.gamma < 0:
            raise SuiteError(f"beta and gamma must be >= 0 (FLAT §3: β, γ ∈ R+), got beta={self.beta}, "
                             f"gamma={self.gamma}")
        if self.tau <= 0:
            raise SuiteError(f"tau (Gumbel-softmax temperature) must be > 0, got {self.tau}")


@register_defense("flat")
class Flat(AdversarialAugmentation):
    """FLAT (module docstring): word-masked model, masked CE − β H + γ L_imp, adv-aug's rounds."""

    Config = FlatConfig
    reference = "Chen & Ji 2022 (FLAT) §3 Eq. 1-4, §3.4, §6"
    version = 1

    def __init__(self, config: FlatConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.pairs: dict[str, list[tuple[str, str]]] = {}  # adversarial example id -> substituted words

    def prepare_model(self, model: TextClassifier) -> TextClassifier:
        cfg: FlatConfig = self.config  # type: ignore[assignment]
        with torch.no_grad():
            dim = int(model.embed(model.encode([("a",)])).shape[-1])
        return WordMaskClassifier(model, embedding_dim=dim, mask_hidden=cfg.mask_hidden, tau=cfg.tau)

    def on_adversarial(self, original: Example, adversarial: Example, record: dict[str, Any]) -> None:
        self.pairs[adversarial.id] = substituted_pairs(" ".join(original.texts), " ".join(adversarial.texts))

    def _importance(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        indices = batch["example_index"].tolist()
        owner, originals, substitutes = [], [], []
        for row, index in enumerate(indices):
            for a, b in self.pairs.get(context.train[index].id, ()):
                owner.append(row)
                originals.append(a)
                substitutes.append(b)
        model: WordMaskClassifier = self.model  # type: ignore[assignment]
        device = batch["labels"].device
        if not owner:
            return torch.zeros(len(indices), device=device)
        phi = model.word_importance(originals + substitutes)
        n = len(originals)
        return importance_loss(phi[:n], phi[n:], torch.tensor(owner, device=device), len(indices))

    def per_example_loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        cfg: FlatConfig = self.config  # type: ignore[assignment]
        model: WordMaskClassifier = self.model  # type: ignore[assignment]
        embeds = model.embed(batch)
        logits = model.mask_logits(embeds)
        out = model.forward_masked(embeds, batch, logits)
        ce = F.cross_entropy(out.logits, batch["labels"], reduction="none")
        tokens = batch["attention_mask"].to(embeds.dtype)
        entropy = (bernoulli_entropy(model.keep_probability(logits)) * tokens).sum(1) / tokens.sum(1).clamp_min(1.0)
        loss = ce - cfg.beta * entropy
        if cfg.gamma:
            loss = loss + cfg.gamma * self._importance(batch, context)
        return loss
