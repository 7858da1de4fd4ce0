"""Robust instances (Zheng et al. 2023, ACL Findings, "Characterizing the Impacts of Instances on
Robustness", /work/shared/papers/robust_instances.txt): data maps of adversarial loss, then
regularised training on (or training only on) a region of the map.

Two phases (``defenses.base.Phase``), App. A.2 "our proposed method consists of two stages":

1. ``data-map``: ``map_epochs`` (Table 4: 10) epochs of standard training; after each, the
   adversarial loss of every training instance (``defenses.data_maps``: §2.1 Eq. 1-3, PGD with
   η = 0.08, ε0 = 0.05, K = 8, unbounded). The map (per-epoch history) is cached, see below.
2. ``train``: from the **initial weights** (``fresh_model``: §3 "we train the model from scratch";
   §4.2 regularises "the standard training process"; the release fine-tunes stage 2 from the
   pre-trained model, its stage 1 being a separate script) for ``epochs`` (Table 4: 5):

   * ``robust-instances+flooding`` / ``robust-instances+label-smoothing`` (§4.2, Eq. ℓ_LR):
     ``ℓ_LR(x_i) = R(ℓ(x_i))`` on the ``percent`` % (p) of the training set most typical of
     ``region`` (default ``robust``: 𝒟_r^{p%}) and plain cross-entropy on the rest, on the whole
     training set. Flooding (Eq. 4) is applied **per instance**, ``|ℓ_i − b| + b`` (b = 0.2), as
     Eq. 4 and ℓ_LR write it and the release computes it; the batch loss is the mean of ℓ_LR over
     all B instances of the mini-batch (selected and not), so an unselected instance's gradient is
     plain CE's (the ``flooding`` defense instead floods the batch-mean loss, after Ishida et al.).
     Label smoothing (Eq. 5): CE against ``y(1 − α) + α/C``, α = 0.8 (Table 4).
     p (Table 4): 30 % SST-2 (default), 50 % QQP and AG News; Table 2 uses 50 % on SST-2 and QQP;
     Table 7 regularises 10 / 30 / 50 % of the robust, non-robust and swing regions (``region``).
   * ``data-selection`` (§3, Tables 1, 6-8, Fig. 3): train only on the ``percent`` % (default 50,
     Table 1; Tables 6-8: 10 / 30 / 50) most typical instances of ``region``, ranked by the
     statistics of the adversarial loss or, as Table 6's second half, of the training loss
     (``statistic: training-loss``); ``epochs`` default null: the run's epochs ("with the same
     hyperparameters as the base model", §3).

``label-smoothing`` is the one-phase baseline: Eq. 5 on every instance (Fig. 6 at 100 %); the paper
gives no α for it, so Table 4's α = 0.8.

Deviations and choices (besides those of ``defenses.data_maps``):

* The release's ``--soft_label 0.8`` gives the gold label a target of 0.8 (others share 0.2);
  Eq. 5 with α = 0.8 gives it ``0.2 + 0.8/C`` (0.6 on two classes). The defaults follow Eq. 5 and
  Table 4; ``smoothing: 0.4`` is the release's setting on two classes (``(1 − 0.8)·C/(C − 1)``).
* The release's scripts select stage 2's instances by mean perturbed loss alone
  (``perturbed_loss_mean_r``, i.e. ``region: low-sensitivity``) with class balancing
  (``balance_labels: true``); the defaults follow the paper's robust region, unbalanced.
* Stage 1 trains with the run's optimiser settings (lr, batch size, schedule, ...), as the
  release's ``data_statistics.py`` uses the same training recipe as stage 2.

**Cache.** The stage-1 history is stored as JSON (``defenses.data_maps.store_document``: temp file,
``os.replace``, file lock) under ``context.state["data_map_cache_root"]`` when set (``None``
disables caching), else ``<context.attack_cache_root>/data_maps`` (the runner's training-time attack
cache, ``$SUITE_CACHE_DIR/attacks/training/data_maps``: the map is made of training-time attacks),
keyed by sha256 over the training examples' (id, label), the initial weights
(``state_sha256`` at ``on_train_start``), the model description, the stage-1 settings, the run's
``TrainConfig`` except ``epochs``, the seed, the device type, torch's version and CPU thread count.
Every variant of one (dataset, backbone, seed, settings) reuses one stage 1.

On a cache hit the ``data-map`` phase is skipped (``Phase.skip``, asked at its start with the
protocol train split in ``context.train``); stage 2 shuffles with its own generator
(``Phase.own_shuffle``) and starts from the global RNG state (torch CPU / CUDA, python, numpy)
captured at ``on_train_start``, so its batches and dropout masks are the same whether stage 1 ran
or not: a cache hit trains a bit-identical stage-2 model. A hit's run logs only stage 2's epochs;
the cached stage-1 time is logged as ``data_map.stage1_seconds``. Artifacts (``context.log_artifact``, both
cases): ``data_map/data_map.json`` and ``.csv`` (one row per instance) and ``data_map/data_map.png``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defenses import data_maps as dm
from defenses.base import Defense, DefenseConfig, Phase, TrainingContext, register_defense
from defenses.flooding import flooding
from defenses.perturbation import PerturbationConfig
from suite.core.errors import SuiteError
from suite.core.paths import attack_cache_root
from suite.data.examples import Example
from suite.models.base import Batch, TextClassifier, state_sha256

log = logging.getLogger(__name__)
STAGE1, STAGE2 = "data-map", "train"
CACHE_STATE_KEY = "data_map_cache_root"


# --- the losses (§4.2) ---------------------------------------------------------------------------------
def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """Eq. 5's ``y(1 − α) + α/C`` for integer ``labels`` (``[B]`` -> ``[B, C]``)."""
    return F.one_hot(labels, num_classes).to(torch.float32) * (1.0 - alpha) + alpha / num_classes


def label_smoothing_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """``R_LS`` (Eq. 5) per instance: cross-entropy against :func:`smoothed_targets` (``[B]``)."""
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=float(alpha))


def lr_loss(plain: torch.Tensor, regularised: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """§4.2's ℓ_LR per instance: ``regularised`` where ``selected`` (𝒟_r^{p%}), ``plain`` elsewhere;
    the gradient of an unselected instance flows through ``plain`` only."""
    return torch.where(selected, regularised, plain)


# --- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataMapConfig(DefenseConfig):
    """Stage 1 (Table 4, Stage1) and the region of stage 2 (see the module docstrings)."""

    where: ClassVar[str] = "robust-instances"
    map_epochs: int = 10  # stage-1 epochs (T of Eq. 2-3)
    perturbation: PerturbationConfig = PerturbationConfig(steps=8, step_size=0.08, init_magnitude=0.05,
                                                          max_norm=0.0, norm="l2")  # K, η, ε0, unbounded
    statistic: str = "adversarial-loss"  # adversarial-loss | training-loss (Table 6)
    region: str = "robust"  # defenses.data_maps.REGIONS (or bottom-left, bottom-right, top, high-variability)
    percent: float = 30.0  # p: Table 4, SST-2 (50 on QQP / AG News; 50 in Table 2)
    balance_labels: bool = False  # the release's do_balance_labels
    epochs: int | None = 5  # stage-2 epochs (Table 4); null: the run's epochs

    def __post_init__(self) -> None:
        where = self.where
        if isinstance(self.map_epochs, bool) or not isinstance(self.map_epochs, int) or self.map_epochs < 1:
            raise SuiteError(f"{where}: map_epochs must be a whole number >= 1, got {self.map_epochs!r}")
        self.perturbation.check(where)
        if self.statistic not in dm.STATISTICS:
            raise SuiteError(f"{where}: statistic must be one of {', '.join(dm.STATISTICS)}, got {self.statistic!r}")
        try:
            dm.canonical_region(self.region)
        except SuiteError as err:
            raise SuiteError(f"{where}: {err}") from None
        if not 0 < self.percent <= 100:
            raise SuiteError(f"{where}: percent must be in (0, 100], got {self.percent!r}")
        object.__setattr__(self, "percent", float(self.percent))  # 50 and 50.0: one config
        if self.epochs is not None and self.epochs < 1:
            raise SuiteError(f"{where}: epochs must be >= 1 or null (the run's epochs), got {self.epochs!r}")


@dataclass(frozen=True)
class RobustFloodingConfig(DataMapConfig):
    flood_level: float = 0.2  # b (Table 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.flood_level < 0:
            raise SuiteError(f"{self.where}: flood_level must be >= 0, got {self.flood_level!r}")


def _check_alpha(where: str, alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise SuiteError(f"{where}: smoothing (α of Eq. 5) must be in [0, 1], got {alpha!r}")


@dataclass(frozen=True)
class RobustLabelSmoothingConfig(DataMapConfig):
    smoothing: float = 0.8  # α (Table 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_alpha(self.where, self.smoothing)


@dataclass(frozen=True)
class DataSelectionConfig(DataMapConfig):
    where: ClassVar[str] = "data-selection"
    percent: float = 50.0  # Table 1 (Tables 6-8: 10 / 30 / 50)
    epochs: int | None = None  # the run's epochs (§3: the base model's hyperparameters)


@dataclass(frozen=True)
class LabelSmoothingConfig(DefenseConfig):
    smoothing: float = 0.8  # α (Table 4; the paper gives no separate value for the baseline)

    def __post_init__(self) -> None:
        _check_alpha("label-smoothing", self.smoothing)


# --- global RNG state (stage 2 must not depend on whether stage 1 ran) -------------------------
def _capture_rng(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.init()  # apply a queued manual_seed now, so the captured state is the real one
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _settings(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(vars(obj))


class DataMapDefense(Defense):
    """Stage 1 (the data map, cached) then a stage-2 phase from the initial weights; subclasses
    define stage 2 (``stage2_examples``, ``stage2_step``)."""

    Config: ClassVar[type[DefenseConfig]] = DataMapConfig
    version = 1

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.data_map: dm.DataMap | None = None
        self.selected: list[int] = []  # positions in the protocol train split
        self.cache_hit: bool | None = None
        self.cache_path: Path | None = None
        self._train_cfg: Any = None
        self._initial_sha = ""
        self._rng: dict[str, Any] | None = None
        self._key, self._key_fields = "", {}
        self._document: dict[str, Any] | None = None
        self._epochs: list[dict[str, np.ndarray]] = []
        self._step_losses: list[list[float]] = []
        self._stage1_seconds, self._epoch_started = 0.0, 0.0
        self._stage1_examples: list[Example] = []

    @property
    def cfg(self) -> Any:
        return self.config

    def phases(self, train_cfg: Any) -> Sequence[Phase]:
        self._train_cfg = train_cfg
        return [Phase(name=STAGE1, epochs=self.cfg.map_epochs, data=self._stage1_data, skip=self._cached),
                Phase(name=STAGE2, epochs=self.cfg.epochs, data=self._stage2_data, fresh_model=True,
                      own_shuffle=True)]

    def on_train_start(self, context: TrainingContext) -> None:
        self._initial_sha = state_sha256(self.model)
        self._rng = _capture_rng(context.device)

    # --- cache ------------------------------------------------------------------------------------
    @staticmethod
    def cache_root(context: TrainingContext) -> Path | None:
        if CACHE_STATE_KEY in context.state:
            value = context.state[CACHE_STATE_KEY]
            return None if value is None else Path(value)
        base = context.attack_cache_root if context.attack_cache_root is not None else attack_cache_root() / "training"
        return Path(base) / "data_maps"

    def key_fields(self, context: TrainingContext, examples: Sequence[Example]) -> dict[str, Any]:
        train = {k: v for k, v in _settings(self._train_cfg).items() if k != "epochs"} if self._train_cfg else {}
        description = json.dumps(self.model.description(), sort_keys=True, default=str)
        return {"format": dm.FORMAT, "examples": dm.examples_digest(examples), "initial_weights": self._initial_sha,
                "model": dm.cache_key({"description": description}),
                "stage1": {"map_epochs": self.cfg.map_epochs, "perturbation": dataclasses.asdict(self.cfg.perturbation),
                           "measure": "eval mode, gold labels, loss at x + delta_K, end of every epoch"},
                "train": train, "seed": int(context.seed), "device": context.device.type, "torch": torch.__version__,
                "threads": torch.get_num_threads() if context.device.type == "cpu" else None}

    def _usable(self, doc: dict[str, Any], n: int) -> bool:
        steps = math.ceil(n / self._train_cfg.batch_size) if self._train_cfg else None
        losses = doc.get("step_losses", [])
        return (len(doc.get("ids", [])) == n and len(losses) == self.cfg.map_epochs
                and (steps is None or all(len(epoch) == steps for epoch in losses)))

    # --- stage 1 -----------------------------------------------------------------------------------
    def _cached(self, context: TrainingContext) -> bool:
        """``Phase.skip`` of stage 1: look the data map up in the cache (a usable hit skips stage 1)."""
        examples = list(context.train)
        self._stage1_examples = examples
        self._key_fields = self.key_fields(context, examples)
        self._key = dm.cache_key(self._key_fields)
        root = self.cache_root(context)
        self.cache_path = None if root is None else dm.cache_file(root, self._key)
        doc = None if root is None else dm.load_document(root, self._key)
        if doc is not None and self._usable(doc, len(examples)):
            self.cache_hit, self._document = True, doc
            return True
        self.cache_hit, self._document = False, None
        return False

    def _stage1_data(self, context: TrainingContext) -> list[Example]:
        self._epochs, self._step_losses, self._stage1_seconds = [], [], 0.0
        return self._stage1_examples

    def on_epoch_start(self, context: TrainingContext) -> None:
        if context.phase == STAGE1:
            self._epoch_started = time.perf_counter()
            self._step_losses.append([])

    def on_epoch_end(self, context: TrainingContext) -> None:
        if context.phase != STAGE1:
            return
        generator = context.generator("robust-instances/data-map", context.phase_epoch)
        measured = dm.measure_epoch(self.model, self._stage1_examples, int(self._train_cfg.batch_size),
                                    context.device, self.cfg.perturbation, generator)
        self._epochs.append(measured)
        self._stage1_seconds += time.perf_counter() - self._epoch_started
        step = context.epoch + 1
        context.log_metric("data_map.adversarial_loss", float(measured["adversarial_loss"].mean()), step)
        context.log_metric("data_map.adversarial_accuracy", 100.0 * float(measured["adversarial_correct"].mean()), step)

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        if context.phase != STAGE1:
            return self.stage2_step(batch, context)
        loss_t = F.cross_entropy(self.model(batch).logits, batch["labels"])
        loss_t.backward()
        loss = float(loss_t.detach())
        self._step_losses[-1].append(loss)
        return {"loss": loss}

    # --- stage 2 -----------------------------------------------------------------------------------
    def _stage2_data(self, context: TrainingContext) -> list[Example]:
        if self._document is None:  # cache miss: the history just measured
            self._document = dm.history_document(self._key, self._key_fields, self._stage1_examples, self._epochs,
                                                 self._step_losses, self._stage1_seconds)
            root = self.cache_root(context)
            if root is not None:
                try:
                    self.cache_path = dm.store_document(root, self._key, self._document)
                except OSError as err:  # an unwritable cache costs the next run its stage 1, not this run
                    log.warning("%s: could not cache the data map under %s: %s", self.name, root, err)
                    self.cache_path = None
        self.data_map = dm.DataMap.from_document(self._document)
        cfg = self.cfg
        stats = self.data_map.statistics(cfg.statistic)
        self.selected = dm.select(stats, cfg.region, cfg.percent, self.data_map.labels, cfg.balance_labels)
        self.log_data_map(context, stats)
        protocol = list(context.protocol_train or self._stage1_examples)
        if [ex.id for ex in protocol] != list(self.data_map.ids):
            raise SuiteError(f"{self.name}: the protocol train split is not the data map's training set "
                             "(on_train_start or an earlier hook changed context.train)")
        return self.stage2_examples(protocol)

    def log_data_map(self, context: TrainingContext, stats: dm.Statistics) -> None:
        assert self.data_map is not None and self._document is not None
        cfg, step = self.cfg, context.epoch + 1
        context.log_metric("data_map.cache_hit", 1.0 if self.cache_hit else 0.0, step)
        context.log_metric("data_map.selected", float(len(self.selected)), step)
        context.log_metric("data_map.stage1_seconds", float(self._document.get("stage1_seconds", 0.0)), step)
        rows = dm.map_rows(self.data_map, cfg.statistic, cfg.percent, self.selected, cfg.balance_labels)
        meta = {"defense": self.name, "statistic": cfg.statistic, "region": dm.canonical_region(cfg.region),
                "percent": cfg.percent, "epochs": int(self._document["epochs"]), "cache_key": self._key,
                "cache_hit": bool(self.cache_hit)}
        context.log_artifact("data_map/data_map.json", dm.rows_json(rows, meta))
        context.log_artifact("data_map/data_map.csv", dm.rows_csv(rows))
        title = f"{self.name}: {cfg.statistic}, {meta['region']} {cfg.percent:g}%"
        context.log_artifact("data_map/data_map.png", dm.map_png(stats, self.selected, title))

    def on_phase_start(self, phase: Phase, context: TrainingContext) -> None:
        if phase.name == STAGE2 and self._rng is not None:
            _restore_rng(self._rng)

    def stage2_examples(self, protocol: list[Example]) -> list[Example]:
        """Stage 2's training data: the whole protocol train split."""
        return protocol

    def stage2_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        return super().training_step(batch, context)


class RobustInstances(DataMapDefense):
    """§4.2: ℓ_LR = R(ℓ) on the selected region, CE elsewhere; subclasses define R."""

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self._mask: torch.Tensor | None = None

    def on_phase_start(self, phase: Phase, context: TrainingContext) -> None:
        super().on_phase_start(phase, context)
        if phase.name == STAGE2:
            mask = torch.zeros(len(context.train), dtype=torch.bool)
            mask[self.selected] = True
            self._mask = mask.to(context.device)

    def regularised(self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stage2_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        assert self._mask is not None
        logits, labels = self.model(batch).logits, batch["labels"]
        ce = F.cross_entropy(logits, labels, reduction="none")
        selected = self._mask[batch["example_index"]]
        objective = lr_loss(ce, self.regularised(logits, labels, ce), selected).mean()
        objective.backward()
        # "loss" is the plain cross-entropy (as the flooding defense reports it)
        return {"loss": float(ce.detach().mean()), "objective": float(objective.detach())}


@register_defense("robust-instances+flooding")
class RobustInstancesFlooding(RobustInstances):
    """Flooding (Eq. 4, per instance, b = 0.2) on the p % most robust instances (§4.2, Tables 2-3, 7)."""

    Config = RobustFloodingConfig
    reference = "robust_instances §2, §4.2 Eq. 4, App. A.2 Table 4; Tables 2, 3, 7"

    def regularised(self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        return flooding(ce, self.cfg.flood_level)


@register_defense("robust-instances+label-smoothing")
class RobustInstancesLabelSmoothing(RobustInstances):
    """Label smoothing (Eq. 5, α = 0.8) on the p % most robust instances (§4.2, Tables 2-3, 7)."""

    Config = RobustLabelSmoothingConfig
    reference = "robust_instances §2, §4.2 Eq. 5, App. A.2 Table 4; Tables 2, 3, 7"

    def regularised(self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        return label_smoothing_loss(logits, labels, self.cfg.smoothing)


@register_defense("data-selection")
class DataSelection(DataMapDefense):
    """§3: retrain from the initial weights on the top ``percent`` % of a region (Tables 1, 6-8)."""

    Config = DataSelectionConfig
    reference = "robust_instances §3, Tables 1, 6, 8, Fig. 3"

    def stage2_examples(self, protocol: list[Example]) -> list[Example]:
        if not self.selected:
            raise SuiteError(f"data-selection: {self.cfg.percent:g}% of {len(protocol)} training examples is "
                             "no example; raise percent")
        return [protocol[i] for i in self.selected]


@register_defense("label-smoothing")
class LabelSmoothing(Defense):
    """Eq. 5 on every training instance (the regularisation alone, robust_instances App. B.3, Fig. 6)."""

    Config = LabelSmoothingConfig
    reference = "Szegedy et al. 2016; robust_instances §4.2 Eq. 5, Table 4, App. B.3"
    version = 1

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        logits, labels = self.model(batch).logits, batch["labels"]
        objective = label_smoothing_loss(logits, labels, self.config.smoothing).mean()  # type: ignore[attr-defined]
        objective.backward()
        return {"loss": float(F.cross_entropy(logits.detach(), labels)), "objective": float(objective.detach())}
