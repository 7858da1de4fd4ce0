"""Flooding (Ishida et al. 2020) and Flooding-X (Liu et al. 2022, ACL, "Flooding-X: improving BERT's
resistance to adversarial attacks via loss-restricted fine-tuning").

Flooding replaces the training loss ``L`` by ``|L - b| + b`` (robust_instances Eq. 4): above the
flood level ``b`` this is ``L`` (gradient descent), below it ``2b - L`` (gradient *ascent*), so the
training loss floats around ``b`` instead of reaching zero. It is applied to the mini-batch mean
loss, as in Ishida et al.'s formulation (the flooded empirical risk, optimised by mini-batches);
robust_instances Eq. 4 writes it per instance, where ``|l_i - b| + b`` would instead push every
example whose own loss is below ``b`` back up.

* ``flooding``: a fixed ``b`` (``flood_level``; robust_instances App. A, Table 4: ``b = 0.2`` on
  SST-2, QQP and AG News).
* ``flooding-x``: Flooding-X chooses ``b`` without a search, from *gradient accordance*: how much a
  gradient step on one sub-batch also lowers the loss of another, measured by the cosine between
  their loss gradients. Flooding-X splits the training data by class into sub-batches, and
  averages the cosine between sub-batch gradients per pair of classes (the class accordance);
  when the accordance falls to zero or below, further descent on some examples raises the loss of
  others (the model starts to memorise), and the training loss at that point is the flood level.

The Flooding-X text is not among the suite's papers (/work/shared/papers); the criterion below
is implemented from its description (per-class sub-batches, cosine gradient accordance, flood
level = training loss where the accordance turns non-positive); what is not pinned down by that
description is chosen here and listed.

What the paper specifies versus what is chosen here:

* When ``b`` is read off (a preliminary run, or the same run) is chosen here: one run does both.
  After every epoch the accordance is measured on the training data, and the first time it is
  ``<= threshold`` (default 0, the sign change) ``b`` is set to the training loss measured at that
  point; flooding applies from the next step on and ``b`` stays fixed. If the criterion never
  triggers, training is plain fine-tuning (no ``flooding_x.flood_level`` is logged).
* Measurement: per class, ``sub_batches_per_class`` disjoint sub-batches of ``sub_batch_size``
  training examples (sampled with a generator seeded by the run seed and epoch); the gradient of
  each sub-batch's mean cross-entropy w.r.t. all trainable parameters, in eval mode (no dropout,
  so the cosines measure the loss landscape rather than dropout noise). Class accordance
  ``C(c, c')`` is the mean cosine over pairs of distinct sub-batches of classes ``c`` and ``c'``;
  the gradient accordance is the mean of ``C`` over class pairs, within-class pairs included
  (``class_pairs: all``) or only between classes (``class_pairs: between``). The measured training
  loss is the mean cross-entropy over the same examples (eval mode, before flooding). Measured on
  the suite's smoke cells, between-class cosines start near -1 and within-class ones near +1 (the
  shared "move towards my class" direction dominates the gradient), so ``between`` would trigger
  at once; ``all`` averages the two into a small number whose sign is the signal.
* Memory: the ``C x S`` flattened gradients are held at once (``C x S x #params`` floats; 8 x 110M
  x 4 bytes = 3.5 GB for BERT-base on SST-2 with the defaults).* Every measurement is logged (``flooding_x.accordance``, ``flooding_x.measured_loss`` per epoch,
  ``flooding_x.flood_level`` once set and every epoch after). Its cost (``C x S`` extra backward
  passes per epoch) counts in the epoch time, since it is part of the method.
* Flooding-X is fine-tuning with the flooded loss; no adversarial examples are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from defenses.base import Defense, DefenseConfig, TrainingContext, register_defense
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier
from suite.models.batching import make_batch

CLASS_PAIRS = ("all", "between")


def flooding(loss: torch.Tensor, flood_level: float) -> torch.Tensor:
    """``|loss - b| + b`` (Ishida et al. 2020, Eq. 2; robust_instances Eq. 4)."""
    return (loss - flood_level).abs() + flood_level


def cosine_matrix(gradients: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of the rows of ``gradients`` (``[S, P]`` -> ``[S, S]``)."""
    gram = gradients @ gradients.T
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    return gram / (norms[:, None] * norms[None, :])


def gradient_accordance(cosines: torch.Tensor, classes: Sequence[int], class_pairs: str = "all") -> float:
    """Mean over class pairs ``(c, c')`` of the mean cosine between distinct sub-batches of ``c`` and
    ``c'`` (``classes[s]`` is sub-batch ``s``'s class); NaN when no pair exists."""
    if class_pairs not in CLASS_PAIRS:
        raise SuiteError(f"flooding-x: class_pairs must be one of {', '.join(CLASS_PAIRS)}, got {class_pairs!r}")
    labels = torch.as_tensor(list(classes))
    distinct = ~torch.eye(len(labels), dtype=torch.bool)
    values: list[torch.Tensor] = []
    for c in labels.unique().tolist():
        for d in labels.unique().tolist():
            if class_pairs == "between" and c == d:
                continue
            pairs = (labels == c)[:, None] & (labels == d)[None, :] & distinct
            if pairs.any():
                values.append(cosines.detach().cpu()[pairs].mean())
    return float(torch.stack(values).mean()) if values else float("nan")


@dataclass(frozen=True)
class FloodingConfig(DefenseConfig):
    flood_level: float = 0.2  # b (robust_instances App. A, Table 4)

    def __post_init__(self) -> None:
        if self.flood_level < 0:
            raise SuiteError(f"flooding: flood_level must be >= 0, got {self.flood_level}")


@register_defense("flooding")
class Flooding(Defense):
    """Cross-entropy flooded at a fixed level ``b``."""

    Config = FloodingConfig
    config: FloodingConfig
    reference = "Ishida et al. 2020; robust_instances §4 Eq. 4, App. A Table 4"

    def flood_level(self) -> float | None:
        return self.config.flood_level

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        ce = F.cross_entropy(self.model(batch).logits, batch["labels"])
        level = self.flood_level()
        loss = ce if level is None else flooding(ce, level)
        loss.backward()
        # "loss" is the cross-entropy itself (the flooded value is >= b by construction)
        return {"loss": float(ce.detach()), "flooded_loss": float(loss.detach())}


@dataclass(frozen=True)
class FloodingXConfig(DefenseConfig):
    sub_batch_size: int = 32  # examples per sub-batch (the papers' batch size, robust_instances App. A)
    sub_batches_per_class: int = 4
    threshold: float = 0.0  # b is set the first time the accordance is <= threshold
    class_pairs: str = "all"  # all | between

    def __post_init__(self) -> None:
        if self.sub_batch_size < 1 or self.sub_batches_per_class < 1:
            raise SuiteError("flooding-x: sub_batch_size and sub_batches_per_class must be >= 1, got "
                             f"{self.sub_batch_size} and {self.sub_batches_per_class}")
        if self.class_pairs not in CLASS_PAIRS:
            raise SuiteError(f"flooding-x: class_pairs must be one of {', '.join(CLASS_PAIRS)}, "
                             f"got {self.class_pairs!r}")


@register_defense("flooding-x")
class FloodingX(Flooding):
    """Plain fine-tuning until the gradient accordance drops to the threshold, then flooding at the
    training loss of that moment."""

    Config = FloodingXConfig
    config: FloodingXConfig  # type: ignore[assignment]
    reference = "Liu et al. 2022 (Flooding-X, ACL); Ishida et al. 2020"

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.level: float | None = None
        self.history: list[tuple[int, float, float]] = []  # (epoch, accordance, measured loss)

    def flood_level(self) -> float | None:
        return self.level

    def measure(self, context: TrainingContext) -> tuple[float, float]:
        """Gradient accordance of per-class sub-batches of the training data, and their mean loss."""
        cfg, model = self.config, self.model
        generator = torch.Generator().manual_seed(context.seed * 1_000_003 + context.epoch)
        by_class: dict[int, list[int]] = {}
        for i, example in enumerate(context.train):
            by_class.setdefault(example.label, []).append(i)
        sub_batches: list[tuple[int, list[int]]] = []
        for label in sorted(by_class):
            members = by_class[label]
            order = torch.randperm(len(members), generator=generator).tolist()
            take = [members[j] for j in order[: cfg.sub_batch_size * cfg.sub_batches_per_class]]
            sub_batches += [(label, take[s:s + cfg.sub_batch_size]) for s in range(0, len(take), cfg.sub_batch_size)]
        params = [p for p in model.parameters() if p.requires_grad]
        size = sum(p.numel() for p in params)
        rows = torch.zeros(len(sub_batches), size, device=context.device)
        loss_sum, count = 0.0, 0
        was_training = model.training
        model.eval()
        try:
            for s, (_, indices) in enumerate(sub_batches):
                batch = make_batch(model, [context.train[i] for i in indices], context.device)
                loss = F.cross_entropy(model(batch).logits, batch["labels"])
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                offset = 0
                for p, g in zip(params, grads):
                    if g is not None:
                        rows[s, offset:offset + p.numel()] = g.flatten()
                    offset += p.numel()
                loss_sum += float(loss.detach()) * len(indices)
                count += len(indices)
        finally:
            model.train(was_training)
        accordance = gradient_accordance(cosine_matrix(rows), [label for label, _ in sub_batches], cfg.class_pairs)
        return accordance, loss_sum / max(1, count)

    def on_epoch_end(self, context: TrainingContext) -> None:
        accordance, loss = self.measure(context)
        step = context.epoch + 1
        self.history.append((context.epoch, accordance, loss))
        context.log_metric("flooding_x.accordance", accordance, step)
        context.log_metric("flooding_x.measured_loss", loss, step)
        if self.level is None and accordance <= self.config.threshold:  # NaN never triggers
            self.level = loss
        if self.level is not None:
            context.log_metric("flooding_x.flood_level", self.level, step)
