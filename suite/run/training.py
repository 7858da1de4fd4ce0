"""The training loop shared by every defense, and clean-accuracy evaluation.

``train`` runs the defense's phases (``Defense.phases``; one by default) in order. Per phase:

1. its data: ``phase.data(context)`` (called with the previous phase's model) or else the
   protocol train split (``context.protocol_train``; for the first phase ``context.train`` as
   ``on_train_start`` left it), into ``context.train``;
2. ``fresh_model``: the model and the extra modules get back the weights they had when training
   started (after ``on_train_start``);
3. ``defense.on_phase_start``, then a new optimiser over the model's and the extra modules'
   parameters (:func:`build_optimizer`) and a new LR schedule sized to the phase's data
   (``ceil(len(context.train) / batch_size) * epochs`` steps);
4. the epochs. When ``context.train`` has a different size at an epoch start than the schedule
   assumed (``on_epoch_start`` / ``on_epoch_end`` grew or shrank it), the rest of the schedule is
   re-sized to the steps actually left, assuming the remaining epochs keep the new size: from the
   current LR the linear decay then reaches 0 exactly after the phase's last step, never before.
   A phase whose ``skip(context)`` is true at its start is left out (no data, hooks or epochs);
   ``own_shuffle`` phases shuffle with their own seeded generator, the others share one;
5. best-validation selection (``select: best_validation``) is per phase: a phase ends on its
   best-validation weights, which the next phase starts from (or attacks, through its data);
   ``TrainResult.best_epoch`` is the final phase's best epoch, counted over all phases. A defense
   may choose the epoch itself (``Defense.select_epoch``, e.g. WETAR's Wasserstein criterion):
   the first epoch of a phase for which it returns true is the phase's model, whatever the
   validation accuracy of that and later epochs.

A single-phase defense without extra modules runs exactly the loop of the first trainer (same
optimiser parameter order, same scheduler values, same random draws), so its numbers do not move.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from defenses.base import Defense, Phase, TrainingContext
from suite.core.errors import SuiteError
from suite.core.seeding import generator as seeded_generator
from suite.models.base import TextClassifier
from suite.models.batching import accuracy, make_batch
from suite.run.config import TrainConfig
from suite.run.protocol import EpochTimer


@dataclass
class TrainResult:
    epoch_seconds: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0  # index into the lists above (epochs counted over all phases)
    phase: list[str] = field(default_factory=list)  # the phase of each epoch


def extra_param_groups(model: nn.Module, extras: Mapping[str, nn.Module],
                       options: Callable[[str], Mapping[str, Any]] = lambda name: {}) -> list[dict[str, Any]]:
    """One param group per extra module with trainable parameters not already optimised (the
    model's, or an earlier extra module's); ``options(name)`` adds e.g. its ``lr``."""
    seen = {id(p) for p in model.parameters()}
    groups = []
    for name, module in extras.items():
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "name": name, **dict(options(name))})
    return groups


def build_optimizer(model: TextClassifier, cfg: TrainConfig,
                    extra_groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """Adam / AdamW over the model's trainable parameters, then the ``extra_groups``; every group
    has the run's ``lr`` and ``weight_decay`` unless it sets its own."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if extra_groups:
        params = [{"params": params, "name": "model"}, *extra_groups]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class LinearSchedule:
    """LR factor of step ``s``: linear warm-up over ``int(warmup_ratio * total_steps)`` steps, then
    linear decay reaching 0 after step ``total_steps - 1``; :meth:`resize` re-sizes the rest."""

    def __init__(self, total_steps: int, warmup_ratio: float) -> None:
        self.total_steps = self.planned_steps = total_steps
        self.warmup = int(warmup_ratio * total_steps)
        self.segments: list[tuple[int, float, int]] = []  # re-sized decays: (from step, factor there, total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        for start, factor, total in reversed(self.segments):
            if step >= start:
                return max(0.0, factor * (total - step) / max(1, total - start))
        return max(0.0, (self.planned_steps - step) / max(1, self.planned_steps - self.warmup))

    def resize(self, total_steps: int, at_step: int) -> None:
        """From step ``at_step`` on, decay linearly from the current factor to 0 after step
        ``total_steps - 1``; during warm-up, keep the warm-up and decay over the new total.
        Steps before ``at_step`` keep their factors."""
        start = max(at_step, self.warmup)
        factor = self(start) if at_step >= self.warmup else 1.0
        self.segments = [seg for seg in self.segments if seg[0] < start] + [(start, factor, total_steps)]
        self.total_steps = total_steps


class ConstantSchedule:
    def __call__(self, step: int) -> float:
        return 1.0

    def resize(self, total_steps: int, at_step: int) -> None:
        pass


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with one :class:`LinearSchedule` (or constant) shared by all param groups."""
    schedule = ConstantSchedule() if cfg.schedule == "constant" else LinearSchedule(total_steps, cfg.warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def resize_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """Re-size the rest of ``scheduler``'s schedule to end after ``total_steps`` steps in all."""
    for schedule in {id(f): f for f in scheduler.lr_lambdas}.values():
        schedule.resize(total_steps, scheduler.last_epoch)


def checked_extra_modules(defense: Defense) -> dict[str, nn.Module]:
    """``defense.extra_modules()``, checked: inference modules inside the model, the others outside."""
    extras = dict(defense.extra_modules())
    inference = set(defense.inference_modules())
    unknown = sorted(inference - set(extras))
    if unknown:
        raise SuiteError(f"defense {defense.name}: inference_modules() names {', '.join(unknown)}, which "
                         "extra_modules() does not return; return them there too")
    in_model = {id(p) for p in defense.model.parameters()}
    for name, module in extras.items():
        inside = [id(p) in in_model for p in module.parameters()]
        if name in inference and not all(inside):
            raise SuiteError(f"defense {defense.name}: extra module '{name}' is needed at inference but is not part "
                             "of the model, so it would not be saved; make it a submodule of the model (wrap the "
                             "backbone in prepare_model, see suite.models.wrapped)")
        if name not in inference and any(inside):
            raise SuiteError(f"defense {defense.name}: training-only extra module '{name}' is part of the model, so "
                             "it would be saved in the checkpoint; keep it outside the model, or list it in "
                             "inference_modules()")
    return extras


def _snapshot(defense: Defense, extras: Mapping[str, nn.Module]) -> dict[str, Any]:
    return {"model": copy.deepcopy(defense.model.state_dict()),
            "extras": {name: copy.deepcopy(m.state_dict()) for name, m in extras.items()}}


def _restore(defense: Defense, snapshot: dict[str, Any]) -> None:
    defense.model.load_state_dict(snapshot["model"])
    for name, module in defense.extra_modules().items():
        if name in snapshot["extras"]:
            module.load_state_dict(snapshot["extras"][name])


def _phases(defense: Defense, cfg: TrainConfig) -> list[tuple[Phase, int]]:
    phases = [(p, cfg.epochs if p.epochs is None else int(p.epochs)) for p in defense.phases(cfg)]
    if not phases:
        raise SuiteError(f"defense {defense.name}: phases() returned no phase; return at least one Phase()")
    for phase, epochs in phases:
        if epochs < 1:
            raise SuiteError(f"defense {defense.name}: phase '{phase.name}' has {epochs} epochs; give it at least 1")
    return phases


def train(defense: Defense, context: TrainingContext, cfg: TrainConfig,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``defense.model`` phase by phase (see the module docstring); keep each phase's
    best-validation weights if asked.

    Per-epoch wall time covers the training steps and the defense's epoch hooks (attacks
    run for data augmentation count), not validation; on GPU it is CUDA-synchronised.
    ``on_epoch(epoch, metrics)`` gets the epoch counted over all phases.
    """
    device = context.device
    if context.protocol_train is None:
        context.protocol_train = context.train
    phases = _phases(defense, cfg)
    generator = torch.Generator().manual_seed(context.seed)
    result = TrainResult()
    context.model = defense.model
    defense.on_train_start(context)
    initial = None
    if any(phase.fresh_model for phase, _ in phases[1:]):
        initial = _snapshot(defense, checked_extra_modules(defense))
    epoch = 0
    for index, (phase, epochs) in enumerate(phases):
        context.phase, context.phase_index = phase.name, index
        if phase.skip is not None and phase.skip(context):
            continue
        shuffle = seeded_generator(context.seed, f"shuffle/{phase.name}") if phase.own_shuffle else generator
        if phase.data is not None:
            data = list(phase.data(context))
        else:  # the first phase trains on context.train as on_train_start left it
            data = context.train if index == 0 else context.protocol_train
        if index > 0 and phase.fresh_model and initial is not None:
            _restore(defense, initial)
        context.train = data
        defense.on_phase_start(phase, context)
        model = defense.model.to(device)
        context.model = model
        extras = checked_extra_modules(defense)
        for module in extras.values():
            module.to(device)
        groups = extra_param_groups(model, extras, defense.extra_module_options)
        optimizer = build_optimizer(model, cfg, groups)
        clip_params = [p for group in optimizer.param_groups for p in group["params"]] if groups else None
        context.optimizer = optimizer
        context.phase_steps = math.ceil(len(context.train) / cfg.batch_size) * epochs
        scheduler = build_scheduler(optimizer, cfg, context.phase_steps)
        context.scheduler = scheduler
        best_state, best_acc = None, -1.0
        selected_by_defense = False
        for phase_epoch in range(epochs):
            context.epoch, context.phase_epoch = epoch, phase_epoch
            model.train()
            for module in extras.values():
                module.train()
            losses: list[float] = []
            with EpochTimer(device) as timer:
                defense.on_epoch_start(context)
                steps_left = math.ceil(len(context.train) / cfg.batch_size) * (epochs - phase_epoch)
                if scheduler.last_epoch + steps_left != context.phase_steps:  # the training set changed size
                    context.phase_steps = scheduler.last_epoch + steps_left
                    resize_scheduler(scheduler, context.phase_steps)
                order = torch.randperm(len(context.train), generator=shuffle).tolist()
                batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                label = f"epoch {epoch + 1}/{cfg.epochs}" if len(phases) == 1 else \
                    f"{phase.name} epoch {phase_epoch + 1}/{epochs}"
                for idx in tqdm(batches, desc=label, leave=False):
                    batch = make_batch(model, [context.train[i] for i in idx], device, idx)
                    optimizer.zero_grad(set_to_none=True)
                    metrics = defense.training_step(batch, context)
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters() if clip_params is None else clip_params,
                                                       cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    defense.after_optimizer_step(context)
                    context.global_step += 1
                    losses.append(metrics.get("loss", float("nan")))
                defense.on_epoch_end(context)
            val_acc = accuracy(model, context.validation, cfg.eval_batch_size, device)
            epoch_metrics = {"epoch_time_s": timer.seconds, "train_loss": sum(losses) / max(1, len(losses)),
                             "validation_accuracy": val_acc}
            result.epoch_seconds.append(timer.seconds)
            result.validation_accuracy.append(val_acc)
            result.train_loss.append(epoch_metrics["train_loss"])
            result.phase.append(phase.name)
            if on_epoch:
                on_epoch(epoch, epoch_metrics)
            if selected_by_defense:
                pass  # the defense chose an earlier epoch of this phase: keep it
            elif defense.select_epoch(context):
                selected_by_defense = True
                best_acc, result.best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict()) if phase_epoch < epochs - 1 else None
            elif cfg.select == "last" or val_acc > best_acc:
                best_acc, result.best_epoch = val_acc, epoch
                if cfg.select == "best_validation" and phase_epoch < epochs - 1:
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    best_state = None  # the current weights are the ones to keep
            epoch += 1
        if best_state is not None:
            model.load_state_dict(best_state)
    if not result.phase:
        raise SuiteError(f"defense {defense.name}: every phase was skipped, so nothing was trained; "
                         "let at least one phase run")
    return result
