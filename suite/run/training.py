"""The training loop shared by every defense, and clean-accuracy evaluation."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from defenses.base import Defense, TrainingContext
from suite.run.config import TrainConfig
from suite.models.base import TextClassifier
from suite.models.batching import accuracy, make_batch
from suite.run.protocol import EpochTimer


@dataclass
class TrainResult:
    epoch_seconds: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0


def build_optimizer(model: TextClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = int(cfg.warmup_ratio * total_steps)

    def linear(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def train(defense: Defense, context: TrainingContext, cfg: TrainConfig,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``defense.model`` for ``cfg.epochs``; keep the best-validation weights if asked.

    Per-epoch wall time covers the training steps and the defense's epoch hooks (attacks
    run for data augmentation count), not validation; on GPU it is CUDA-synchronised.
    """
    model, device = defense.model, context.device
    optimizer = build_optimizer(model, cfg)
    context.optimizer = optimizer
    steps_per_epoch = math.ceil(len(context.train) / cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)
    generator = torch.Generator().manual_seed(context.seed)
    result = TrainResult()
    best_state, best_acc = None, -1.0
    defense.on_train_start(context)
    for epoch in range(cfg.epochs):
        context.epoch = epoch
        model.train()
        losses: list[float] = []
        with EpochTimer(device) as timer:
            defense.on_epoch_start(context)
            order = torch.randperm(len(context.train), generator=generator).tolist()
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False):
                batch = make_batch(model, [context.train[i] for i in idx], device, idx)
                optimizer.zero_grad(set_to_none=True)
                metrics = defense.training_step(batch, context)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
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
        if on_epoch:
            on_epoch(epoch, epoch_metrics)
        if cfg.select == "last" or val_acc > best_acc:
            best_acc, result.best_epoch = val_acc, epoch
            if cfg.select == "best_validation" and epoch < cfg.epochs - 1:
                best_state = copy.deepcopy(model.state_dict())
            else:
                best_state = None  # the current weights are the ones to keep
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
