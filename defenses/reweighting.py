"""WETAR: learning to reweight training examples towards an adversarial validation set
(``wetar-s``: static, ``wetar-d``: dynamic).

Xu et al. 2022 (wetar_reweighting.txt), after Ren et al. 2018. At each training step (§3.1,
Algorithm 1, App. A):

* a training mini-batch of n and a validation mini-batch of m rows (Table 3: m = 256 on SST-2 /
  AGNEWS, 64 on MR; ``validation_batch_size``);
* per-example perturbations ε = 0 and a virtual SGD step (Eq. 3)
  ``θ' = θ − τ ∇_θ Σ_i ε_i L_i(θ)``, through ``torch.func.functional_call`` with
  ``create_graph`` (the paper uses the ``higher`` library; ``torch.func`` is part of torch, needs
  no monkey-patched copy of the model and does the same differentiation through one step);
* ``g = ∂/∂ε (1/m) Σ_j L_θ'(x^v_j, y^v_j)`` at ε = 0 (Eq. 4); ``w̃ = max(−g, 0)``,
  ``w = w̃ / (Σ w̃ + δ)`` with δ = 1 only when Σ w̃ = 0 (Eq. 5);
* the real update with the w-weighted training loss ``Σ_i w_i L_i(θ)`` (Eq. 6), through the
  run's optimiser (the paper writes the step as SGD with rate τ; its BERT runs use the usual
  AdamW, lr 2e-5, weight decay 1e-6, Table 3), τ = the optimiser's current learning rate.

At ε = 0, θ' = θ, so ``g_i = −τ ⟨∇_θ L_val(θ), ∇_θ L_i(θ)⟩`` exactly (for any model): the
normalised weights do not depend on τ > 0. The per-example losses L_i are the defense's
``per_example_loss`` (clean cross-entropy); the meta step's training forward is reused for the
real update (one forward of the training batch per step). The paper estimates the cost at about
3x plain training (App. A) — with equal batch sizes; a 256-row validation batch next to a 32-row
training batch costs more (see ``benchmarks/test_defense_epoch_time.py``).

The adversarial validation set (§3.2, §4.3):

* validation = the protocol's validation split (one tenth of train where the dataset has no
  validation split of its own, §4), which the run's model selection also reads;
* ``adversarial_ratio`` ρ (50 %, Table 3): a seeded random ρ-fraction P of the clean validation
  examples gets its adversarial counterpart, the construction attack's output on it against the
  model of that moment (``train_attack``; Table 1's TextFooler is ``textfooler-offline`` here, as
  stock TextFooler needs USE). The counterpart is the attack's output whatever its result: a
  failed attack's most damaging perturbation, the unchanged text when the model already
  misclassified it (skipped); the counts are logged as ``wetar.validation_{successful,failed,
  skipped}``;
* every validation mini-batch holds k clean examples, ⌊ρk⌋ of them from P, each with its
  counterpart in the same mini-batch (a pair is never split), k the largest with k + ⌊ρk⌋ ≤ m
  (m = 64: 43 clean + 21 adversarial); drawn without replacement within the mini-batch, fresh
  for every step from a seeded generator; smaller pools cap the draw;
* ``wetar-s`` generates the counterparts once, before the reweighted training. The paper does not
  say against which model: here against a model fine-tuned with plain cross-entropy for
  ``source_epochs`` (default 1) on the training split — an attack of the untrained classifier
  (chance-level predictions) gives no meaningful adversarial examples, and WETAR's tables compare
  against such a fine-tuned Base; the reweighted training then starts again from the initial
  weights (phases ``source`` then ``reweight``, ``fresh_model``). ``source_epochs: 0`` attacks the
  initial model instead;
* ``wetar-d`` does the same at the start and then regenerates P and its counterparts against the
  current model every ``regenerate_every`` epochs ("every one or two epochs", §3.2, App. A;
  default 2); the attack counts in the epoch's wall time.

Model selection (§3.2, §5.1): each epoch the weights given to every training example are summed
and normalised into a distribution p over the training examples; the distance between
consecutive epochs is ``scipy.stats.wasserstein_distance`` between the distributions of the N
values N·p(x) (Figure 3 plots these weight distributions; comparing the values, not an arbitrary
order of examples, keeps the distance independent of that order; the factor N makes the mean 1,
so one threshold fits every training-set size). The first reweighted epoch whose distance is
below ``selection_threshold`` is the final model (``Defense.select_epoch``); if none is, the
run's own selection (best validation accuracy) applies. The paper gives no threshold
("small (e.g., less than a given threshold)"): 0.05 is this suite's choice, made before any run
and not tuned. Logged per epoch: ``wetar.wasserstein``, ``wetar.nonzero_weight_fraction``;
``wetar.selected_epoch`` when the threshold selects one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch.func import functional_call

from defenses.adversarial_augmentation import perturbed_example
from defenses.base import Defense, DefenseConfig, Phase, TrainingContext, register_defense
from suite.core.errors import SuiteError
from suite.data.examples import Example
from suite.models.base import Batch
from suite.models.batching import make_batch

SOURCE_PHASE, REWEIGHT_PHASE = "source", "reweight"
ADV_SEPARATOR = "#wetar-adv"  # counterpart id: "<validation id>#wetar-adv<generation>"


@dataclass(frozen=True)
class WetarConfig(DefenseConfig):
    train_attack: str = "textfooler-offline"  # builds the adversarial validation set (§4.3: TextFooler)
    adversarial_ratio: float = 0.5  # ρ: fraction of clean validation examples with a counterpart (Table 3)
    validation_batch_size: int = 256  # m rows per validation mini-batch (Table 3: 256 SST-2/AGNEWS, 64 MR)
    source_epochs: int = 1  # plain fine-tuning epochs of the model first attacked; 0: the initial model
    selection_threshold: float = 0.05  # Wasserstein distance that selects the epoch (not in the paper)
    query_budget: int | None = None  # of the construction attack; None: the recipe's own

    def __post_init__(self) -> None:
        if not 0.0 <= self.adversarial_ratio <= 1.0:
            raise SuiteError(f"adversarial_ratio must be in [0, 1], got {self.adversarial_ratio!r}")
        if not isinstance(self.validation_batch_size, int) or self.validation_batch_size < 1:
            raise SuiteError(f"validation_batch_size must be a whole number >= 1, got {self.validation_batch_size!r}")
        if not isinstance(self.source_epochs, int) or self.source_epochs < 0:
            raise SuiteError(f"source_epochs must be a whole number >= 0, got {self.source_epochs!r}")
        if not self.selection_threshold >= 0:
            raise SuiteError(f"selection_threshold must be >= 0, got {self.selection_threshold!r}")


@dataclass(frozen=True)
class WetarDynamicConfig(WetarConfig):
    regenerate_every: int = 2  # epochs between regenerations of the adversarial validation set (§3.2: 1 or 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.regenerate_every, int) or self.regenerate_every < 1:
            raise SuiteError(f"regenerate_every must be a whole number >= 1, got {self.regenerate_every!r}")


# --- the math (Eq. 3-5) ---------------------------------------------------------------------------
def normalised_weights(eps_grad: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``w̃ = max(−g, 0)``, ``w = w̃ / (Σ w̃ + δ)`` with δ = 1 iff Σ w̃ = 0 (then w = 0)."""
    clipped = torch.clamp(-eps_grad, min=0.0)
    total = clipped.sum()
    return clipped / (total + (1.0 if float(total) == 0.0 else 0.0))


def eps_gradient(model: torch.nn.Module, losses: torch.Tensor, eps: torch.Tensor, validation_batch: Batch,
                 tau: float) -> torch.Tensor:
    """Eq. 3-4: ``g = ∂/∂ε`` of the mean validation loss after the virtual step, for the training
    examples whose per-example losses are ``losses`` (computed by ``model`` with its current
    parameters θ; ``eps`` the zero perturbations, ``requires_grad``). The graph of ``losses`` is
    kept for the real update."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grads = torch.autograd.grad((eps * losses).sum(), params, create_graph=True, allow_unused=True)
    updated = {name: p if g is None else p - tau * g for (name, p), g in zip(named, grads)}  # Eq. 3
    val_logits = functional_call(model, updated, (validation_batch,)).logits
    val_loss = F.cross_entropy(val_logits, validation_batch["labels"])  # Eq. 4's mean over m
    (eps_grad,) = torch.autograd.grad(val_loss, eps, retain_graph=True)
    return eps_grad.detach()


def meta_weights(model: torch.nn.Module, losses: torch.Tensor, eps: torch.Tensor, validation_batch: Batch,
                 tau: float) -> torch.Tensor:
    """Eq. 3-5: the normalised weights of the training examples (:func:`eps_gradient`, then
    :func:`normalised_weights`)."""
    return normalised_weights(eps_gradient(model, losses, eps, validation_batch, tau))


def weight_distance(current: torch.Tensor, previous: torch.Tensor) -> float:
    """Wasserstein distance between the distributions of ``N·p`` of two epochs' accumulated
    weights (each normalised to a distribution p over the N training examples)."""
    def scaled(acc: torch.Tensor) -> Any:
        total = float(acc.sum())
        values = acc / total if total > 0 else torch.full_like(acc, 1.0 / len(acc))
        return (values * len(acc)).double().numpy()
    return float(wasserstein_distance(scaled(current), scaled(previous)))


# --- the adversarial validation set (§3.2) ---------------------------------------------------------
def batch_composition(rows: int, ratio: float) -> tuple[int, int]:
    """(clean examples k, of them paired p = ⌊ρk⌋) per validation mini-batch of at most ``rows``."""
    k = rows
    while k > 0 and k + math.floor(ratio * k + 1e-9) > rows:
        k -= 1
    return k, math.floor(ratio * k + 1e-9)


@dataclass
class AdversarialValidation:
    """Clean validation examples, the paired ones P (indices into ``clean``) and their counterparts."""

    clean: list[Example]
    paired: list[int]
    counterparts: dict[int, Example]

    def minibatch(self, rows: int, ratio: float, generator: torch.Generator) -> list[Example]:
        """One validation mini-batch: k clean examples, ⌊ρk⌋ from P with their counterparts."""
        paired_set = set(self.paired)
        unpaired = [i for i in range(len(self.clean)) if i not in paired_set]
        k, p = batch_composition(rows, ratio)
        k = min(k, len(self.clean))
        p = min(math.floor(ratio * k + 1e-9), len(self.paired))
        u = min(k - p, len(unpaired))
        chosen_pairs = [self.paired[i] for i in torch.randperm(len(self.paired), generator=generator)[:p].tolist()]
        chosen_clean = [unpaired[i] for i in torch.randperm(len(unpaired), generator=generator)[:u].tolist()]
        out = [self.clean[i] for i in chosen_clean]
        for i in chosen_pairs:
            out += [self.clean[i], self.counterparts[i]]
        return out


@register_defense("wetar-s")
class WetarStatic(Defense):
    """WETAR-S (§3.1 Eq. 1-6, §3.2 static construction, Algorithm 1): see the module docstring."""

    Config = WetarConfig
    reference = "Xu et al. 2022 (WETAR) §3.1 Eq. 3-6, §3.2, Alg. 1, Table 3"
    version = 1

    def __init__(self, config: WetarConfig, model: Any) -> None:
        super().__init__(config, model)
        self.validation_set: AdversarialValidation | None = None
        self.generation = 0
        self.epoch_weights: torch.Tensor | None = None
        self.previous_weights: torch.Tensor | None = None
        self.distance: float | None = None

    # --- structure -----------------------------------------------------------------------------------
    def phases(self, train_cfg: Any) -> Sequence[Phase]:
        cfg: WetarConfig = self.config  # type: ignore[assignment]
        reweight = Phase(name=REWEIGHT_PHASE, data=self._construct_first, fresh_model=cfg.source_epochs > 0)
        if cfg.source_epochs == 0:
            return [reweight]
        return [Phase(name=SOURCE_PHASE, epochs=cfg.source_epochs), reweight]

    def _construct_first(self, context: TrainingContext) -> list[Example]:
        self.construct(context)
        return list(context.protocol_train or context.train)

    def construct(self, context: TrainingContext) -> None:
        """Draw P (a seeded ρ-fraction of the validation split) and attack it on the current model."""
        cfg: WetarConfig = self.config  # type: ignore[assignment]
        clean = list(context.validation)
        if not clean:
            raise SuiteError(f"defense {self.name}: the validation split is empty; WETAR needs one "
                             "(give the dataset a validation_limit > 0)")
        size = round(cfg.adversarial_ratio * len(clean))
        order = torch.randperm(len(clean), generator=context.generator("wetar-paired", self.generation)).tolist()
        paired = sorted(order[:size])
        options = {} if cfg.query_budget is None else {"query_budget": cfg.query_budget}
        records = context.attack([clean[i] for i in paired], cfg.train_attack, **options) if paired else []
        counterparts, kept = {}, []
        for i, record in zip(paired, records):
            adv = perturbed_example(clean[i], record, f"{ADV_SEPARATOR}{self.generation}")
            if adv is not None:
                counterparts[i] = adv
                kept.append(i)
        self.validation_set = AdversarialValidation(clean, kept, counterparts)
        for result in ("successful", "failed", "skipped"):
            context.log_metric(f"wetar.validation_{result}", float(sum(r.get("result") == result for r in records)),
                               self.generation)
        self.generation += 1

    # --- hooks ---------------------------------------------------------------------------------------
    def on_epoch_start(self, context: TrainingContext) -> None:
        if context.phase == REWEIGHT_PHASE:
            self.epoch_weights = torch.zeros(len(context.train), dtype=torch.float64)

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        if context.phase != REWEIGHT_PHASE:
            return super().training_step(batch, context)
        cfg: WetarConfig = self.config  # type: ignore[assignment]
        assert self.validation_set is not None and context.optimizer is not None
        examples = self.validation_set.minibatch(cfg.validation_batch_size, cfg.adversarial_ratio,
                                                 context.generator("wetar-validation-batch", context.global_step))
        validation_batch = make_batch(self.model, examples, batch["labels"].device)
        losses = self.per_example_loss(batch, context)
        eps = torch.zeros_like(losses, requires_grad=True)
        tau = float(context.optimizer.param_groups[0]["lr"])
        weights = meta_weights(self.model, losses, eps, validation_batch, tau)
        loss = (weights * losses).sum()  # Eq. 6
        loss.backward()
        if self.epoch_weights is not None and "example_index" in batch:
            self.epoch_weights.index_add_(0, batch["example_index"].cpu(), weights.double().cpu())
        return {"loss": float(loss.detach()), "nonzero_weights": float((weights > 0).float().mean())}

    def on_epoch_end(self, context: TrainingContext) -> None:
        if context.phase != REWEIGHT_PHASE or self.epoch_weights is None:
            return
        acc = self.epoch_weights
        context.log_metric("wetar.nonzero_weight_fraction", float((acc > 0).double().mean()), context.epoch)
        self.distance = None
        if self.previous_weights is not None and len(self.previous_weights) == len(acc):
            self.distance = weight_distance(acc, self.previous_weights)
            context.log_metric("wetar.wasserstein", self.distance, context.epoch)
        self.previous_weights = acc

    def select_epoch(self, context: TrainingContext) -> bool:
        cfg: WetarConfig = self.config  # type: ignore[assignment]
        if context.phase != REWEIGHT_PHASE or self.distance is None or self.distance >= cfg.selection_threshold:
            return False
        context.log_metric("wetar.selected_epoch", float(context.epoch), context.epoch)
        return True


@register_defense("wetar-d")
class WetarDynamic(WetarStatic):
    """WETAR-D (§3.2 dynamic construction): WETAR-S whose adversarial validation examples are
    regenerated against the current model every ``regenerate_every`` epochs."""

    Config = WetarDynamicConfig
    reference = "Xu et al. 2022 (WETAR) §3.1 Eq. 3-6, §3.2 (dynamic), App. A"

    def on_epoch_start(self, context: TrainingContext) -> None:
        cfg: WetarDynamicConfig = self.config  # type: ignore[assignment]
        if context.phase == REWEIGHT_PHASE and context.phase_epoch > 0 and context.phase_epoch % cfg.regenerate_every == 0:
            self.construct(context)
        super().on_epoch_start(context)
