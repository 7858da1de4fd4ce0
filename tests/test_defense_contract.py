"""The contract every registered defense keeps, checked on a tiny word CNN with its Config defaults:
a training step runs, training is repeatable from a seed, the checkpoint reloads to the same
logits, the config round-trips through a mapping, and the class carries a version."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from defenses import DEFENSES
from defenses.base import Defense
from suite.core.seeding import seed_everything
from suite.core.typed import from_mapping
from suite.data.examples import Example
from suite.models.base import state_sha256
from suite.models.batching import make_batch
from suite.models.loading import load_classifier
from suite.models.text_processing import Vocabulary
from suite.models.word_models import KimCNN
from suite.run.config import TrainConfig
from suite.run.training import train

WORDS = ["good", "great", "bad", "awful", "the", "movie", "plot", "was", "a", "fine", "dull", "film"]
TRAIN = [Example(f"train/{i}", (" ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 4)),), i % 2)
         for i in range(16)]
VALIDATION = [Example(f"val/{i}", (" ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(4)),), i % 2)
              for i in range(6)]
# Training attacks whose stock resources are online only (USE, the counter-fitted vectors) run as
# their declared offline variant here, as the profiles run them
OFFLINE = {"ada": {"train_attack": "textfooler-offline"}}
CFG = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="adamw", weight_decay=0.01, warmup_ratio=0.5,
                  max_grad_norm=1.0)


def _trained(cls: type[Defense], cache: Path) -> tuple[Defense, dict[str, float], str]:
    from defenses import TrainingContext

    seed_everything(0)
    vocab = Vocabulary.build(WORDS, 0)
    model = KimCNN(vocab, 2, embedding_dim=8, max_length=8, filter_sizes=(2, 3), num_filters=4)
    model.backbone_name = "cnn"
    initial = state_sha256(model)
    defense = cls(dataclasses.replace(cls.Config(), **OFFLINE.get(cls.name, {})), model)
    losses: list[float] = []
    context = TrainingContext(train=list(TRAIN), validation=VALIDATION, device=torch.device("cpu"), seed=0,
                              attack_cache_root=cache)  # training attacks (adv-aug, flat): a private cache
    train(defense, context, CFG, on_epoch=lambda epoch, metrics: losses.append(metrics["train_loss"]))
    assert context.global_step >= 2  # one epoch of 2 steps per phase (adv-aug, flat: more phases)
    return defense, {"loss": losses[0]}, initial


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name, cls", DEFENSES.items(), ids=[n for n, _ in DEFENSES.items()])
def test_defense_contract(name: str, cls: type[Defense], tmp_path: Path) -> None:
    assert isinstance(cls.version, int) and not isinstance(cls.version, bool) and cls.version >= 1
    config = cls.Config()
    assert from_mapping(cls.Config, dataclasses.asdict(config), name) == config

    first, metrics, initial = _trained(cls, tmp_path / "first")
    assert math.isfinite(metrics["loss"])
    assert state_sha256(first.model) != initial, "two training steps left the weights unchanged"
    second, metrics_again, _ = _trained(cls, tmp_path / "second")  # attacks again: no cache hit
    assert state_sha256(second.model) == state_sha256(first.model), "not repeatable from the seed"
    assert metrics_again == metrics

    model = first.model.eval()
    model.save(tmp_path)
    loaded = load_classifier(tmp_path)
    assert type(loaded) is type(model)
    batch = make_batch(model, VALIDATION, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)
