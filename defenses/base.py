"""The defense interface and registry.

A defense is a training procedure around a ``TextClassifier``. The trainer
(``suite.run.training``) owns the loop — batching, optimiser and scheduler steps, gradient
clipping, validation, timing — and calls the hooks below, so each family of the five papers
fits without special cases:

* embedding-space adversarial training (PGD, FreeLB, TA-VAT, adaptive AT): ``training_step``
  perturbs ``model.embed(batch)`` and calls ``backward`` as many times as it needs;
* sample reweighting (WETAR): ``training_step`` weights per-example losses, reading
  ``context.validation`` and ``batch["example_index"]``; ``select_epoch`` picks the final epoch;
* word masks (FLAT): ``prepare_model`` wraps the backbone in a masked classifier
  (``suite.models.wrapped.WrappedClassifier``, registered with ``@register_wrapper``), whose
  parameters the optimiser then includes, which evaluation and attacks use as is and which
  ``load_classifier`` rebuilds from the checkpoint;
* auxiliary losses and regularisers (TRADES, SMART, InfoBERT, flooding): ``loss`` /
  ``per_example_loss``;
* data augmentation and data maps: ``on_epoch_start`` / ``on_epoch_end`` may change
  ``context.train`` or record training dynamics.

Trainer interface v2 (what the seed papers' methods need beyond one loop over the train split):

* **phases** — ``phases(train_cfg)`` returns a sequence of :class:`Phase` (default: one phase,
  the protocol train split for ``train_cfg.epochs``). Each phase has its data (a callable of the
  context, run at the phase start with the previous phase's model, e.g. to attack it), its epochs
  and ``fresh_model`` (start again from the model's initial weights) — e.g. "train, attack the
  trained model, train a fresh model on clean + adversarial examples". Every phase gets a new
  optimiser and LR schedule sized to its data; when ``context.train`` changes size between epochs
  the rest of the schedule is re-sized (see ``suite.run.training``).
* **extra trainable modules** — ``extra_modules()`` (critics, projection or reconstruction heads,
  mask networks): optimised, scheduled, decayed and clipped with the model by the trainer's
  optimiser (``extra_module_options(name)`` may set a param group's ``lr``...), moved to the
  device. Those named in ``inference_modules()`` are needed at test time and must be submodules of
  ``self.model`` (a wrapper), so that they are saved in, and reloaded from, the checkpoint; all
  others are training-only and must stay outside the model (they are never saved).
* **attacks during training** — ``context.attack(examples, attack_name)`` attacks the current
  model with a registered attack (``attacks.generate``), cached per (weights, attack, example)
  so that a killed training resumes without re-attacking. By convention a defense that attacks
  during training names the attack in a config field ``train_attack`` (read by the
  ``train_attack`` property, recorded with the run).
* **seeded randomness** — ``context.generator(purpose, *counters)`` (``suite.core.seeding``).

Third-party packages register a defense with the decorator and expose the module through the
``suite.defenses`` entry-point group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attacks.generate import generate
from suite.core.errors import SuiteError
from suite.core.paths import attack_cache_root
from suite.core.registry import Registry
from suite.core.seeding import generator
from suite.data.examples import Example
from suite.models.base import Batch, TextClassifier


@dataclass
class TrainingContext:
    """What a defense may read (and, for ``train``, replace) during training.

    The trainer sets ``model``, ``optimizer``, ``scheduler``, ``phase*``, ``epoch`` (counted over
    all phases), ``phase_epoch`` and ``global_step``; the runner sets the attack settings.
    """

    train: list[Example]
    validation: list[Example]
    device: torch.device
    seed: int
    epoch: int = 0
    global_step: int = 0
    optimizer: torch.optim.Optimizer | None = None
    log_metric: Callable[[str, float, int], None] = lambda name, value, step: None
    # (artifact path inside the training run, content): e.g. ("data_map/data_map.json", b"..."); the
    # runner writes it to the run's MLflow artifacts (JSON / CSV / PNG: never pickle)
    log_artifact: Callable[[str, bytes], None] = lambda path, data: None
    state: dict[str, Any] = field(default_factory=dict)
    # --- trainer interface v2 ---
    protocol_train: list[Example] | None = None  # the protocol's train split; None: ``train`` when training starts
    model: TextClassifier | None = None  # the model being trained (``defense.model``)
    scheduler: Any = None  # the phase's LR scheduler (``torch.optim.lr_scheduler.LambdaLR``)
    phase: str = ""  # name of the current phase
    phase_index: int = 0
    phase_epoch: int = 0  # epoch within the phase
    phase_steps: int = 0  # optimiser steps the phase's schedule is sized for (re-sized when ``train`` changes)
    attack_cache_root: Path | None = None  # training-time attack cache; None: attack_cache_root() / "training"
    column_names: Sequence[str] = ("text_a", "text_b")  # the dataset's text fields (for attacks on pairs)

    def attack(self, examples: Sequence[Example], attack_name: str, **options: Any) -> list[dict[str, Any]]:
        """Attack ``examples`` on the current model with registered attack ``attack_name``: one
        record per example, in order (``record["perturbed"]`` is the adversarial text, ``result``
        is successful / failed / skipped). Cached per (model weights, attack, example id): a
        re-run from the same weights attacks nothing again. ``options`` go to
        ``attacks.generate.generate`` (``query_budget``, ``batch_size``, ``stop_after``...)."""
        if self.model is None:
            raise SuiteError("context.attack: the context has no model (the trainer sets context.model); "
                             "call it during training, or set context.model first")
        root = self.attack_cache_root if self.attack_cache_root is not None else attack_cache_root() / "training"
        return generate(self.model, examples, attack_name, seed=self.seed, cache_root=root,
                        column_names=tuple(self.column_names), **options)

    def generator(self, purpose: str, *counters: int) -> torch.Generator:
        """A CPU generator for one purpose of this run (``suite.core.seeding.generator``), e.g.
        ``context.generator("mask-init")`` or ``context.generator("augment", context.epoch)``."""
        return generator(self.seed, purpose, *counters)


@dataclass(frozen=True)
class Phase:
    """One stage of training (see the module docstring).

    ``data(context)`` returns the phase's training examples; it runs at the phase start, before a
    ``fresh_model`` reset, so it sees the previous phase's (best-validation) model. ``None``: the
    protocol train split. ``epochs`` ``None``: the run's ``epochs``. ``skip(context)`` true: the
    phase does not run (no data, no epochs; asked at its start). ``own_shuffle``: see the field.
    """

    name: str = "train"
    epochs: int | None = None
    data: Callable[[TrainingContext], Sequence[Example]] | None = None
    fresh_model: bool = False
    # asked at the phase start, before its data: true leaves the phase out (e.g. its result is cached)
    skip: Callable[[TrainingContext], bool] | None = None
    # shuffle with a generator of the phase's own (seed, "shuffle/<name>") instead of the run's shared
    # one, so that its batches do not depend on how many earlier phases ran
    own_shuffle: bool = False


@dataclass(frozen=True)
class DefenseConfig:
    """Base class of every defense's typed configuration."""


class Defense:
    """Plain supervised training; subclasses override the hooks they need.

    ``version``: bump it when a change alters the defense's training numbers (it is part of the config hash).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[DefenseConfig]] = DefenseConfig
    reference: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        self.config = config
        self.model = self.prepare_model(model)

    def prepare_model(self, model: TextClassifier) -> TextClassifier:
        """Return the model to train, evaluate and attack (FLAT wraps it with word masks)."""
        return model

    @property
    def train_attack(self) -> str | None:
        """The attack this defense runs during training, if any: by convention the config field
        ``train_attack`` (an ``attacks.ATTACKS`` name); ``None`` for defenses that attack nothing."""
        return getattr(self.config, "train_attack", None)

    # --- structure of training ----------------------------------------------------------------------
    def phases(self, train_cfg: Any) -> Sequence[Phase]:
        """The phases of training; ``train_cfg`` is the run's ``TrainConfig``. Default: one phase."""
        return [Phase()]

    def extra_modules(self) -> Mapping[str, nn.Module]:
        """Trainable modules besides ``self.model`` (critics, heads, mask networks), by name; asked
        at each phase start (after ``on_train_start`` / ``on_phase_start``, which may create them)."""
        return {}

    def inference_modules(self) -> frozenset[str]:
        """Names of the ``extra_modules`` needed at test time: they must be submodules of
        ``self.model``, which saves them in the checkpoint. The others are training-only."""
        return frozenset()

    def extra_module_options(self, name: str) -> dict[str, Any]:
        """Optimiser settings of extra module ``name``'s param group (e.g. ``{"lr": 1e-3}``); the
        default is the model's (same ``lr`` and ``weight_decay``). Its LR follows the schedule."""
        return {}

    # --- hooks ---------------------------------------------------------------------------------------
    def on_train_start(self, context: TrainingContext) -> None:
        """Once, before the first phase (and before any optimiser exists)."""

    def on_phase_start(self, phase: Phase, context: TrainingContext) -> None:
        """At the start of each phase, after its data is in ``context.train`` (and the model reset
        if ``fresh_model``), before its optimiser is built."""

    def on_epoch_start(self, context: TrainingContext) -> None:
        pass

    def on_epoch_end(self, context: TrainingContext) -> None:
        pass

    def per_example_loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        """Training loss of each example of ``batch`` (``[B]``); default: clean cross-entropy."""
        return F.cross_entropy(self.model(batch).logits, batch["labels"], reduction="none")

    def loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        """Mean training loss of ``batch``: the mean of ``per_example_loss``.

        Without an override of ``per_example_loss`` it is computed as ``F.cross_entropy`` with
        ``reduction="mean"``: the same gradients, and the same logged loss to the last bit as
        before per-example losses existed (a mean of the ``[B]`` vector may differ in the last
        float bit, from the summation order).
        """
        if type(self).per_example_loss is Defense.per_example_loss:
            return F.cross_entropy(self.model(batch).logits, batch["labels"])
        return self.per_example_loss(batch, context).mean()

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        """Leave the parameter gradients of this step in ``.grad``; return metrics to log.

        The trainer zeroes gradients before and clips and steps the optimiser after.
        """
        loss = self.loss(batch, context)
        loss.backward()
        return {"loss": float(loss.detach())}

    def after_optimizer_step(self, context: TrainingContext) -> None:
        """For updates outside the optimiser (SMART's proximal teacher, adaptive AT's weights)."""

    def select_epoch(self, context: TrainingContext) -> bool:
        """After each epoch's validation: true makes this epoch (``context.epoch``) the model of its
        phase, overriding the run's ``select`` for this and the phase's later epochs (training goes
        on; their weights are not kept). Default: false, the run's ``select`` decides."""
        return False


DEFENSES: Registry[type[Defense]] = Registry("defense", entry_point_group="suite.defenses")


def register_defense(name: str, *aliases: str) -> Callable[[type[Defense]], type[Defense]]:
    """Class decorator: ``@register_defense("pgd")``; sets ``cls.name``."""

    def decorator(cls: type[Defense]) -> type[Defense]:
        cls.name = name
        return DEFENSES.register(name, *aliases)(cls)

    return decorator
