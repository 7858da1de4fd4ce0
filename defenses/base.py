"""The defense interface and registry.

A defense is a training procedure around a ``TextClassifier``. The trainer
(``suite.run.training``) owns the loop — batching, optimiser and scheduler steps, gradient
clipping, validation, timing — and calls the hooks below, so each family of the five papers
fits without special cases:

* embedding-space adversarial training (PGD, FreeLB, TA-VAT, adaptive AT): ``training_step``
  perturbs ``model.embed(batch)`` and calls ``backward`` as many times as it needs;
* sample reweighting (WETAR): ``training_step`` weights per-example losses, reading
  ``context.validation`` and ``batch["example_index"]``;
* word masks (FLAT): ``prepare_model`` wraps the backbone in a masked classifier, whose
  parameters the optimiser then includes and which evaluation and attacks use as is;
* auxiliary losses and regularisers (TRADES, SMART, InfoBERT, flooding): ``loss``;
* data augmentation and data maps: ``on_epoch_start`` / ``on_epoch_end`` may change
  ``context.train`` or record training dynamics.

Third-party packages register a defense with the decorator and expose the module through the
``suite.defenses`` entry-point group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from suite.data.examples import Example
from suite.models.base import Batch, TextClassifier
from suite.core.registry import Registry


@dataclass
class TrainingContext:
    """What a defense may read (and, for ``train``, replace) during training."""

    train: list[Example]
    validation: list[Example]
    device: torch.device
    seed: int
    epoch: int = 0
    global_step: int = 0
    optimizer: torch.optim.Optimizer | None = None
    log_metric: Callable[[str, float, int], None] = lambda name, value, step: None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DefenseConfig:
    """Base class of every defense's typed configuration."""


class Defense:
    """Plain supervised training; subclasses override the hooks they need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[DefenseConfig]] = DefenseConfig
    reference: ClassVar[str] = ""

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        self.config = config
        self.model = self.prepare_model(model)

    def prepare_model(self, model: TextClassifier) -> TextClassifier:
        """Return the model to train, evaluate and attack (FLAT wraps it with word masks)."""
        return model

    def on_train_start(self, context: TrainingContext) -> None:
        pass

    def on_epoch_start(self, context: TrainingContext) -> None:
        pass

    def on_epoch_end(self, context: TrainingContext) -> None:
        pass

    def loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        """Mean training loss of ``batch``; the default is cross-entropy on clean inputs."""
        return F.cross_entropy(self.model(batch).logits, batch["labels"])

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        """Leave the parameter gradients of this step in ``.grad``; return metrics to log.

        The trainer zeroes gradients before and clips and steps the optimiser after.
        """
        loss = self.loss(batch, context)
        loss.backward()
        return {"loss": float(loss.detach())}

    def after_optimizer_step(self, context: TrainingContext) -> None:
        """For updates outside the optimiser (SMART's proximal teacher, adaptive AT's weights)."""


DEFENSES: Registry[type[Defense]] = Registry("defense", entry_point_group="suite.defenses")


def register_defense(name: str, *aliases: str) -> Callable[[type[Defense]], type[Defense]]:
    """Class decorator: ``@register_defense("pgd")``; sets ``cls.name``."""

    def decorator(cls: type[Defense]) -> type[Defense]:
        cls.name = name
        return DEFENSES.register(name, *aliases)(cls)

    return decorator
