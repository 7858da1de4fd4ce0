"""Robust instances (robust_instances.txt): data-map statistics and regions, the stage-2 losses,
data selection, the stage-1 cache (a hit trains the same model bit for bit) and the artifacts."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defenses import DEFENSES
from defenses import data_maps as dm
from defenses.flooding import flooding
from defenses.perturbation import PerturbationConfig
from defenses.robust_instances import (CACHE_STATE_KEY, DataMapConfig, DataSelection, DataSelectionConfig,
                                       LabelSmoothingConfig, RobustFloodingConfig, RobustInstancesFlooding,
                                       RobustInstancesLabelSmoothing, RobustLabelSmoothingConfig, label_smoothing_loss,
                                       lr_loss, smoothed_targets)
from suite.core.errors import SuiteError
from suite.models.base import state_sha256
from suite.run.config import TrainConfig
from suite.run.training import train
from test_trainer_v2 import context_for, synthetic, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="adamw", weight_decay=0.01, warmup_ratio=0.5,
                  max_grad_norm=1.0)
SMALL = dict(map_epochs=2, epochs=2, perturbation=PerturbationConfig(steps=2, step_size=0.08, init_magnitude=0.05,
                                                                     max_norm=0.0))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- statistics and regions ------------------------------------------------------------------------
def test_map_statistics_hand_computed() -> None:
    losses = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])  # T = 3 epochs, N = 2 instances
    correct = np.array([[1, 0], [0, 0], [1, 1]], dtype=bool)
    stats = dm.map_statistics(losses, correct)
    np.testing.assert_allclose(stats.sensitivity, [3.0, 2.0])  # Eq. 2
    np.testing.assert_allclose(stats.variability, [math.sqrt(8 / 3), 0.0])  # Eq. 3: divided by T, not T - 1
    np.testing.assert_allclose(stats.flip_rate, [1 / 3, 2 / 3])  # wrong under attack in 1 and 2 of 3 epochs


S = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.05, 0.95, 0.3, 0.6, 0.4])
V = np.array([0.1, 0.1, 0.9, 0.05, 0.5, 0.2, 0.8, 0.0, 0.3, 0.7])
FLIP = np.array([0.0, 1.0, 0.5, 1.0, 0.5, 0.0, 1.0, 0.0, 0.5, 0.5])

# 30 % of 10 instances = 3. Corner regions on min-max normalised (s, v): robust = nearest (0, 0):
# d(0) = (.05/.9)² + (.1/.9)² = .015, d(5) = (.2/.9)² = .049, d(7) = (.25/.9)² = .077, next d(8) = .485;
# non-robust = nearest (1, 0): d(1) = .015, d(3) = .031, d(8) = .262. Flip-rate ties by sensitivity.
EXPECTED = {"robust": [0, 5, 7], "non-robust": [1, 3, 8], "swing": [2, 6, 9], "low-sensitivity": [0, 2, 5],
            "high-sensitivity": [1, 3, 6], "low-variability": [0, 3, 7], "small-flip-rate": [0, 5, 7],
            "large-flip-rate": [1, 3, 6]}


@pytest.mark.parametrize("region", sorted(EXPECTED))
def test_region_selection_at_exact_percentiles(region: str) -> None:
    stats = dm.Statistics(S, V, FLIP)
    assert dm.select(stats, region, 30) == EXPECTED[region]
    assert len(dm.select(stats, region, 10)) == 1 and len(dm.select(stats, region, 50)) == 5
    assert dm.select(stats, region, 100) == list(range(10))


def test_region_ranking_order_aliases_and_counts() -> None:
    stats = dm.Statistics(S, V, FLIP)
    assert dm.rank(stats, "small-flip-rate")[:3].tolist() == [5, 0, 7]  # flip 0 for all three: s .05 < .1 < .3
    assert dm.rank(stats, "large-flip-rate")[:3].tolist() == [6, 1, 3]
    for alias, region in dm.ALIASES.items():
        assert dm.select(stats, alias, 30) == EXPECTED[region]
    # robust is not low-sensitivity (Table 8 lists them apart): instance 2 has low s, high v
    assert 2 in EXPECTED["low-sensitivity"] and 2 not in EXPECTED["robust"]
    assert [dm.count_for(10, 30), dm.count_for(100, 29), dm.count_for(7, 50), dm.count_for(16, 100)] == [3, 29, 3, 16]
    with pytest.raises(SuiteError, match="region must be one of"):
        dm.select(stats, "middle", 30)


def test_balanced_selection_takes_each_class_by_rank() -> None:
    stats = dm.Statistics(S, V, FLIP)
    labels = [0, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    # low-sensitivity rank: 5, 0, 2, 7, 9, 4, 8, 3, 1, 6; 40 % = 4 -> 2 per class: 5, 0 (class 0), 9, 8 (class 1)
    assert dm.select(stats, "low-sensitivity", 40, labels, balance_labels=True) == [0, 5, 8, 9]
    assert dm.select(stats, "low-sensitivity", 40) == [0, 2, 5, 7]


# --- stage-2 losses --------------------------------------------------------------------------------
def test_label_smoothing_target_and_loss_hand_values() -> None:
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(smoothed_targets(labels, 2, 0.8), torch.tensor([[0.6, 0.4], [0.4, 0.6]]))
    torch.testing.assert_close(smoothed_targets(torch.tensor([2]), 4, 0.8), torch.tensor([[0.2, 0.2, 0.4, 0.2]]))
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    # p = (e²/(e²+1), 1/(e²+1)) = (.880797, .119203): -.6 ln .880797 - .4 ln .119203 = .926928 (label 0)
    # and -.4 ln .880797 - .6 ln .119203 = 1.326928 (label 1)
    torch.testing.assert_close(label_smoothing_loss(logits, labels, 0.8), torch.tensor([0.926928, 1.326928]),
                               rtol=0, atol=1e-5)
    plain = F.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(label_smoothing_loss(logits, labels, 0.0), plain)


def test_flooding_on_the_selected_subset_only() -> None:
    logits = torch.tensor([[6.0, -6.0], [0.3, 0.1], [0.2, 0.4], [5.0, -5.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 0, 0])
    selected = torch.tensor([True, False, True, False])
    b = 0.2
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert ce[0] < b < ce[2]  # instance 0 is below the flood level (ascent), instance 2 above (descent)
    objective = lr_loss(ce, flooding(ce, b), selected).mean()
    (grad,) = torch.autograd.grad(objective, logits)
    (plain,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)  # mean over the same B = 4
    torch.testing.assert_close(grad[~selected], plain[~selected], rtol=0, atol=0)
    torch.testing.assert_close(grad[0], -plain[0])  # |ℓ - b| + b below b: gradient ascent
    torch.testing.assert_close(grad[2], plain[2])
    expected = ((2 * b - ce[0]) + ce[1] + ce[2] + ce[3]) / 4
    torch.testing.assert_close(objective, expected)


def test_stage2_step_uses_the_selection_mask() -> None:
    model = tiny_cnn()
    model.dropout.p = 0.0
    data = synthetic(8)
    defense = RobustInstancesLabelSmoothing(RobustLabelSmoothingConfig(), model)
    defense._mask = torch.tensor([i % 2 == 0 for i in range(8)])
    from suite.models.batching import make_batch

    batch = make_batch(model, data, torch.device("cpu"), list(range(8)))
    model.zero_grad()
    metrics = defense.stage2_step(batch, context_for(data))
    logits = model(batch).logits
    ce = F.cross_entropy(logits, batch["labels"], reduction="none")
    manual = torch.where(defense._mask, label_smoothing_loss(logits, batch["labels"], 0.8), ce).mean()
    assert metrics["objective"] == pytest.approx(float(manual.detach()), abs=1e-6)
    assert metrics["loss"] == pytest.approx(float(ce.mean().detach()), abs=1e-6)
    assert model.classifier.weight.grad is not None


# --- stage 1 measurement -------------------------------------------------------------------------------
def test_measure_epoch_raises_the_loss_and_is_repeatable() -> None:
    model = tiny_cnn()
    data = synthetic(12)
    settings = PerturbationConfig(steps=8, step_size=0.08, init_magnitude=0.05, max_norm=0.0)

    def measure(steps: int, norm: str = "l2") -> dict[str, np.ndarray]:
        cfg = dataclasses.replace(settings, steps=steps, norm=norm)
        return dm.measure_epoch(model, data, 5, torch.device("cpu"), cfg, torch.Generator().manual_seed(0))

    first, again, longer = measure(2), measure(2), measure(8)
    assert model.training  # mode restored
    for name in dm.HISTORY_FIELDS:
        np.testing.assert_array_equal(first[name], again[name])
    assert first["adversarial_loss"].shape == (12,) and first["adversarial_correct"].dtype == bool
    assert (first["adversarial_loss"] > first["training_loss"]).all()  # every ascent step raises the loss
    assert (longer["adversarial_loss"] > first["adversarial_loss"]).all()
    np.testing.assert_array_equal(first["training_loss"], longer["training_loss"])
    assert (measure(2, "linf")["adversarial_loss"] > first["training_loss"]).all()


# --- training: selection, cache, artifacts ------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.artifacts: dict[str, bytes] = {}
        self.metrics: dict[str, list[float]] = {}

    def artifact(self, path: str, data: bytes) -> None:
        self.artifacts[path] = data

    def metric(self, name: str, value: float, step: int) -> None:
        self.metrics.setdefault(name, []).append(value)


def run(cls: type, config: Any, cache: Path | None, train_set: list | None = None, seed: int = 0,
        cfg: TrainConfig = CFG) -> tuple[Any, Any, Recorder, Any]:
    from suite.core.seeding import seed_everything

    seed_everything(seed)
    recorder = Recorder()
    context = context_for(train_set or synthetic(24), seed=seed, log_artifact=recorder.artifact,
                          log_metric=recorder.metric)
    context.state[CACHE_STATE_KEY] = cache
    defense = cls(config, tiny_cnn(seed))  # KimCNN with dropout 0.5: stage 2 consumes the global RNG
    result = train(defense, context, cfg)
    return defense, result, recorder, context


def test_cache_hit_trains_the_same_model_bit_for_bit(tmp_path: Path) -> None:
    config = RobustFloodingConfig(**SMALL, percent=50.0)
    cache = tmp_path / "maps"
    miss, miss_result, miss_rec, _ = run(RobustInstancesFlooding, config, cache)
    assert miss.cache_hit is False and miss.cache_path is not None and miss.cache_path.is_file()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == [miss.cache_path.name]
    doc = json.loads(miss.cache_path.read_text())
    assert doc["key"] == miss.cache_path.stem and doc["epochs"] == 2 and len(doc["ids"]) == 24
    hit, hit_result, hit_rec, _ = run(RobustInstancesFlooding, config, cache)
    assert hit.cache_hit is True
    assert state_sha256(hit.model) == state_sha256(miss.model)
    assert hit.selected == miss.selected and len(miss.selected) == 12
    # a hit skips stage 1 (Phase.skip); stage 2's epochs and losses are the miss's exactly
    assert miss_result.phase[:2] == ["data-map"] * 2 and hit_result.phase == miss_result.phase[2:] == ["train"] * 2
    assert hit_result.train_loss == miss_result.train_loss[2:]
    assert hit_rec.metrics["data_map.cache_hit"] == [1.0] and miss_rec.metrics["data_map.cache_hit"] == [0.0]
    assert "data_map.adversarial_loss" not in hit_rec.metrics  # no measurement on a hit
    assert len(miss_rec.metrics["data_map.adversarial_loss"]) == 2
    uncached, _, _, _ = run(RobustInstancesFlooding, config, None)
    assert uncached.cache_hit is False and uncached.cache_path is None
    assert state_sha256(uncached.model) == state_sha256(miss.model)
    # another stage-2 variant and region share the map; the seed and the lr are part of the key
    other, _, _, _ = run(RobustInstancesLabelSmoothing, RobustLabelSmoothingConfig(**SMALL, region="swing"), cache)
    assert other.cache_hit is True and other.selected != miss.selected
    reseeded, _, _, _ = run(RobustInstancesFlooding, config, cache, seed=1)
    assert reseeded.cache_hit is False and state_sha256(reseeded.model) != state_sha256(miss.model)
    relr, _, _, _ = run(RobustInstancesFlooding, config, cache, cfg=dataclasses.replace(CFG, lr=5e-3))
    assert relr.cache_hit is False
    assert len(list(cache.glob("*.json"))) == 3 and not list(cache.glob("*.tmp"))


def test_data_selection_trains_exactly_the_chosen_subset(tmp_path: Path) -> None:
    seen: list[str] = []

    class Watched(DataSelection):
        def stage2_step(self, batch, context):  # type: ignore[no-untyped-def]
            seen.extend(context.train[i].id for i in batch["example_index"].tolist())
            return super().stage2_step(batch, context)

    config = DataSelectionConfig(**{**SMALL, "epochs": 1}, region="low-sensitivity", percent=25.0)
    defense, result, recorder, context = run(Watched, config, tmp_path)
    rows = json.loads(recorder.artifacts["data_map/data_map.json"])["rows"]
    by_sensitivity = sorted(range(len(rows)), key=lambda i: (rows[i]["sensitivity"], i))[:6]  # 25 % of 24
    expected = {rows[i]["id"] for i in by_sensitivity}
    assert {r["id"] for r in rows if r["selected"]} == expected
    assert [ex.id for ex in context.train] == [rows[i]["id"] for i in sorted(by_sensitivity)]
    assert sorted(seen) == sorted(expected)  # one stage-2 epoch: each chosen example exactly once
    assert result.phase == ["data-map", "data-map", "train"]


def test_artifacts_are_json_csv_and_png(tmp_path: Path) -> None:
    config = RobustLabelSmoothingConfig(**SMALL, percent=30.0)
    defense, _, recorder, _ = run(RobustInstancesLabelSmoothing, config, tmp_path)
    assert set(recorder.artifacts) == {"data_map/data_map.json", "data_map/data_map.csv", "data_map/data_map.png"}
    doc = json.loads(recorder.artifacts["data_map/data_map.json"])
    assert doc["region"] == "robust" and doc["statistic"] == "adversarial-loss" and doc["epochs"] == 2
    rows = doc["rows"]
    assert len(rows) == 24 and sum(r["selected"] for r in rows) == 7  # floor(24 · 0.3)
    assert all(r["selected"] == r["region.robust"] for r in rows)
    assert all(0.0 <= r["flip_rate"] <= 1.0 and r["variability"] >= 0 for r in rows)
    assert {r["flip_rate"] * 2 for r in rows} <= {0.0, 1.0, 2.0}  # T + 1 = 3 possible values
    table = list(csv.DictReader(io.StringIO(recorder.artifacts["data_map/data_map.csv"].decode())))
    assert [t["id"] for t in table] == [r["id"] for r in rows]
    assert float(table[0]["sensitivity"]) == pytest.approx(rows[0]["sensitivity"])
    assert recorder.artifacts["data_map/data_map.png"].startswith(PNG_SIGNATURE)
    # the map's statistics are those of the cached history
    history = json.loads(defense.cache_path.read_text())
    stats = dm.map_statistics(np.asarray(history["adversarial_loss"], dtype=np.float32),
                              np.array([[c == "1" for c in row] for row in history["adversarial_correct"]]))
    np.testing.assert_allclose([r["sensitivity"] for r in rows], stats.sensitivity, rtol=0, atol=0)


def test_label_smoothing_baseline_objective() -> None:
    cls = DEFENSES.get("label-smoothing")
    model = tiny_cnn()
    model.dropout.p = 0.0
    defense = cls(LabelSmoothingConfig(smoothing=0.5), model)
    from suite.models.batching import make_batch

    data = synthetic(6)
    batch = make_batch(model, data, torch.device("cpu"), list(range(6)))
    metrics = defense.training_step(batch, context_for(data))
    logits = model(batch).logits
    expected = label_smoothing_loss(logits, batch["labels"], 0.5).mean().detach()
    assert metrics["objective"] == pytest.approx(float(expected), abs=1e-6)
    assert metrics["objective"] != pytest.approx(metrics["loss"])


@pytest.mark.parametrize("kwargs, message", [
    ({"region": "middle"}, "region must be one of"), ({"percent": 0.0}, "percent must be in"),
    ({"map_epochs": 0}, "map_epochs must be"), ({"statistic": "margin"}, "statistic must be one of"),
    ({"epochs": 0}, "epochs must be >= 1"),
])
def test_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        DataMapConfig(**kwargs)
    with pytest.raises(SuiteError, match="smoothing"):
        RobustLabelSmoothingConfig(smoothing=1.5)
    with pytest.raises(SuiteError, match="flood_level"):
        RobustFloodingConfig(flood_level=-1.0)
    assert RobustFloodingConfig(region="bottom-left").region == "bottom-left"


def test_registered_names_and_defaults() -> None:
    names = ["robust-instances+flooding", "robust-instances+label-smoothing", "label-smoothing", "data-selection"]
    assert all(name in DEFENSES for name in names)
    flood = RobustFloodingConfig()
    assert (flood.map_epochs, flood.epochs, flood.percent, flood.flood_level) == (10, 5, 30.0, 0.2)
    assert flood.region == "robust" and flood.statistic == "adversarial-loss" and not flood.balance_labels
    assert (flood.perturbation.steps, flood.perturbation.step_size, flood.perturbation.init_magnitude,
            flood.perturbation.max_norm) == (8, 0.08, 0.05, 0.0)
    assert RobustLabelSmoothingConfig().smoothing == 0.8 and DataSelectionConfig().percent == 50.0
    assert DataSelectionConfig().epochs is None
