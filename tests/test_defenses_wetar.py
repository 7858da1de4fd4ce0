"""WETAR (wetar-s / wetar-d): the meta-gradient against its closed form, the δ rule and clipping,
the adversarial validation mini-batches, Wasserstein model selection, the trainer's selection hook."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Defense, DefenseConfig, TrainingContext
from defenses.reweighting import (REWEIGHT_PHASE, AdversarialValidation, WetarConfig, WetarDynamic,
                                  WetarDynamicConfig, WetarStatic, batch_composition, eps_gradient,
                                  meta_weights, normalised_weights, weight_distance)
from suite.core.errors import SuiteError
from suite.data.examples import Example
from suite.models.base import ModelOutput, state_sha256
from suite.run.config import TrainConfig
from suite.run.training import train
from test_trainer_v2 import context_for, synthetic, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Linear(nn.Module):
    """Softmax regression on ``batch["x"]``: the closed-form gradients below."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return ModelOutput(logits=self.lin(batch["x"]))


def test_eps_gradient_is_the_closed_form_for_a_linear_model() -> None:
    torch.manual_seed(0)
    n, m, d, c, tau = 6, 5, 4, 3, 0.3
    model = Linear(d, c).double()
    train_batch = {"x": torch.randn(n, d, dtype=torch.float64), "labels": torch.randint(0, c, (n,))}
    val_batch = {"x": torch.randn(m, d, dtype=torch.float64), "labels": torch.randint(0, c, (m,))}
    losses = F.cross_entropy(model(train_batch).logits, train_batch["labels"], reduction="none")
    eps = torch.zeros_like(losses, requires_grad=True)
    g = eps_gradient(model, losses, eps, val_batch, tau)

    # ∇_W L_i = r_i x_iᵀ, ∇_b L_i = r_i with r = softmax(Wx + b) − onehot(y); at ε = 0, θ' = θ, so
    # g_i = −τ (1/m) Σ_j ⟨r_j, r_i⟩ (⟨x_j, x_i⟩ + 1)
    with torch.no_grad():
        def residual(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.softmax(model(batch).logits, -1) - F.one_hot(batch["labels"], c).double()
        r_t, r_v = residual(train_batch), residual(val_batch)
        expected = -tau / m * ((r_v @ r_t.T) * (val_batch["x"] @ train_batch["x"].T + 1)).sum(0)
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)
    assert (g > 0).any() and (g < 0).any()  # the draw exercises both signs

    # the weights: clipped at 0, normalised to 1, independent of τ > 0; the loss graph is kept
    w = normalised_weights(g)
    assert torch.equal(w == 0, g >= 0) and float(w.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(meta_weights(model, losses, eps, val_batch, 5 * tau), w)
    (w * losses).sum().backward()
    assert model.lin.weight.grad is not None


def test_delta_rule_and_clipping() -> None:
    g = torch.tensor([0.5, -1.0, 0.0, -3.0])
    torch.testing.assert_close(normalised_weights(g), torch.tensor([0.0, 0.25, 0.0, 0.75]))
    none = normalised_weights(torch.tensor([0.2, 0.0, 1.0]))  # Σ w̃ = 0: δ = 1, every weight 0, no NaN
    assert torch.equal(none, torch.zeros(3))


@pytest.mark.parametrize("rows, ratio, expected", [(64, 0.5, (43, 21)), (256, 0.5, (171, 85)), (9, 0.5, (6, 3)),
                                                   (64, 0.0, (64, 0)), (64, 1.0, (32, 32))])
def test_batch_composition(rows: int, ratio: float, expected: tuple[int, int]) -> None:
    assert batch_composition(rows, ratio) == expected


def _validation(n: int = 20, paired: int = 10) -> AdversarialValidation:
    clean = [Example(f"val/{i}", (f"clean {i}",), i % 2) for i in range(n)]
    chosen = list(range(0, 2 * paired, 2))
    return AdversarialValidation(clean, chosen, {i: Example(f"val/{i}#wetar-adv0", (f"adv {i}",), i % 2)
                                                 for i in chosen})


def test_a_pair_is_never_split_and_each_minibatch_has_the_ratio() -> None:
    validation = _validation()
    for step in range(50):
        batch = validation.minibatch(9, 0.5, torch.Generator().manual_seed(step))
        ids = [ex.id for ex in batch]
        assert len(ids) == len(set(ids)) == 9
        adversarial = [i for i in ids if "#wetar-adv" in i]
        assert len(adversarial) == 3 and len(ids) - len(adversarial) == 6
        for adv in adversarial:  # its clean example sits in the same mini-batch
            assert adv.split("#")[0] in ids
        for ex in batch:
            if "#wetar-adv" in ex.id:
                assert ex.texts[0].startswith("adv") and ex.label == int(ex.id.split("/")[1].split("#")[0]) % 2
    draws = {tuple(ex.id for ex in validation.minibatch(9, 0.5, torch.Generator().manual_seed(s))) for s in range(5)}
    assert len(draws) == 5  # fresh draws per step
    small = validation.minibatch(256, 0.5, torch.Generator().manual_seed(0))  # pools cap the draw
    assert len(small) == 30 and sum("#wetar-adv" in ex.id for ex in small) == 10


class FakeAttackContext(TrainingContext):
    """A context whose training attack returns canned records (the attack itself is tested elsewhere)."""

    def attack(self, examples: Any, attack_name: str, **options: Any) -> list[dict[str, Any]]:
        self.state.setdefault("attacked", []).append((attack_name, [ex.id for ex in examples]))
        results = ["successful", "failed", "skipped"]
        return [{"result": results[i % 3], "perturbed": f"{ex.texts[0]} ADV"} for i, ex in enumerate(examples)]


def test_construction_pairs_a_seeded_fraction_with_the_attack_output() -> None:
    logged: list[tuple[str, float, int]] = []
    context = FakeAttackContext(train=synthetic(8), validation=synthetic(10, "val", 100), device=torch.device("cpu"),
                                seed=3, log_metric=lambda n, v, s: logged.append((n, v, s)))
    defense = WetarStatic(WetarConfig(train_attack="pwws"), tiny_cnn())
    defense.construct(context)
    (name, ids), = context.state["attacked"]
    assert name == "pwws" and len(ids) == 5  # round(0.5 x 10)
    again = WetarStatic(WetarConfig(train_attack="pwws"), tiny_cnn())
    again.construct(FakeAttackContext(train=[], validation=synthetic(10, "val", 100), device=torch.device("cpu"), seed=3))
    assert again.validation_set.paired == defense.validation_set.paired  # seeded
    vs = defense.validation_set
    assert [vs.clean[i].id for i in vs.paired] == ids
    for i in vs.paired:
        assert vs.counterparts[i].texts == (vs.clean[i].texts[0] + " ADV",)
        assert vs.counterparts[i].label == vs.clean[i].label and vs.counterparts[i].id == vs.clean[i].id + "#wetar-adv0"
    assert ("wetar.validation_successful", 2.0, 0) in logged and ("wetar.validation_skipped", 1.0, 0) in logged
    defense.construct(context)  # a regeneration: generation 1, a new draw of P
    assert defense.generation == 2 and context.state["attacked"][1][1] != ids


def test_wasserstein_selection_on_a_synthetic_weight_series() -> None:
    # N·p per epoch (each accumulation scaled by an arbitrary factor: only the distribution counts);
    # W1 of equal-size samples = mean |sorted a − sorted b|: 0.5, then 0.1, then 0.01 < 0.05
    series = [[1, 1, 1, 1], [2, 0, 1, 1], [2, 0, 1.2, 0.8], [2, 0.02, 1.18, 0.8], [0.8, 2, 0.02, 1.18]]
    logged: list[tuple[str, float, int]] = []
    context = context_for(synthetic(4), log_metric=lambda n, v, s: logged.append((n, v, s)))
    context.phase = REWEIGHT_PHASE
    defense = WetarStatic(WetarConfig(), tiny_cnn())
    selected = []
    for epoch, values in enumerate(series):
        context.epoch = epoch
        defense.on_epoch_start(context)
        defense.epoch_weights = torch.tensor(values, dtype=torch.float64) * (epoch + 1) * 7.0
        defense.on_epoch_end(context)
        selected.append(defense.select_epoch(context))
    distances = [v for n, v, _ in logged if n == "wetar.wasserstein"]
    assert distances == pytest.approx([0.5, 0.1, 0.01, 0.0], abs=1e-12)  # the last: a permutation of the third
    assert selected == [False, False, False, True, True]  # the trainer keeps the first
    assert ("wetar.selected_epoch", 3.0, 3) in logged
    assert weight_distance(torch.zeros(3), torch.ones(3)) == 0.0  # an epoch without weights: uniform


@dataclass(frozen=True)
class _NoConfig(DefenseConfig):
    pass


class SelectsSecondEpoch(Defense):
    Config = _NoConfig

    def __init__(self, config: DefenseConfig, model: Any) -> None:
        super().__init__(config, model)
        self.states: list[str] = []
        self.asked = 0

    def select_epoch(self, context: TrainingContext) -> bool:
        self.asked += 1
        return context.epoch >= 1

    def on_epoch_end(self, context: TrainingContext) -> None:
        self.states.append(state_sha256(self.model))


def test_the_trainer_keeps_the_epoch_a_defense_selects() -> None:
    defense = SelectsSecondEpoch(_NoConfig(), tiny_cnn())
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, optimizer="adam", schedule="constant", max_grad_norm=None,
                      select="best_validation")
    result = train(defense, context_for(synthetic(24)), cfg)
    assert result.best_epoch == 1 and len(result.validation_accuracy) == 4  # training went on
    assert len(set(defense.states)) == 4 and state_sha256(defense.model) == defense.states[1]
    assert defense.asked == 2  # not asked again once it has chosen


def test_phases_and_config_checks() -> None:
    static = WetarStatic(WetarConfig(), tiny_cnn())
    assert [(p.name, p.epochs, p.fresh_model) for p in static.phases(None)] == [("source", 1, False),
                                                                                 ("reweight", None, True)]
    direct = WetarStatic(WetarConfig(source_epochs=0), tiny_cnn())
    assert [(p.name, p.fresh_model) for p in direct.phases(None)] == [("reweight", False)]
    assert WetarDynamicConfig().regenerate_every == 2 and WetarDynamic.Config is WetarDynamicConfig
    for bad in ({"adversarial_ratio": 1.5}, {"validation_batch_size": 0}, {"source_epochs": -1}):
        with pytest.raises(SuiteError):
            WetarConfig(**bad)
    with pytest.raises(SuiteError, match="regenerate_every"):
        WetarDynamicConfig(regenerate_every=0)


def test_dynamic_regenerates_every_k_epochs() -> None:
    context = FakeAttackContext(train=synthetic(16), validation=synthetic(6, "val", 100), device=torch.device("cpu"),
                                seed=0)
    defense = WetarDynamic(WetarDynamicConfig(train_attack="pwws", regenerate_every=2, validation_batch_size=6,
                                              source_epochs=1), tiny_cnn())
    cfg = TrainConfig(epochs=5, batch_size=8, lr=1e-2, optimizer="adam", schedule="constant", max_grad_norm=None)
    result = train(defense, context, cfg)
    assert result.phase == ["source"] + ["reweight"] * 5
    assert len(context.state["attacked"]) == 3 and defense.generation == 3  # before epoch 1, then at 3 and 5
