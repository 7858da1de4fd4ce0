"""Wall time of one training epoch per defense, relative to ``finetune`` on the same data.

Compare the ratios with adaptive_at Table 10 (time per epoch relative to fine-tuning on
BERT-base / GPU); here the backbone and data are small, so absolute seconds mean little and
the ratio (number of forward/backward passes per step) is what carries over.

    OMP_NUM_THREADS=1 python -m pytest benchmarks -q --benchmark-only \
        [--backbone cnn|minilm-l6] [--bench-examples 256] [--adv-steps 5]

Each defense's ``extra_info`` holds ``ratio_to_finetune`` (median epoch time / finetune's).
WETAR (``wetar-s``, ``wetar-d``) is timed on its reweighted epoch: no source phase, its
adversarial validation set built before the timed epoch with PWWS capped at 2 queries (the
construction attack is not part of the step and the rows' lengths barely change), validation mini-batches of ``--wetar-validation-rows`` (default 256, Table 3's
SST-2 setting next to a training batch of 32; the paper's "about 3x" assumes equal batches).
Needs the offline dataset mirror (``$SUITE_DATA_DIR``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from defenses import DEFENSES, TrainingContext
from suite.run.config import TrainConfig
from suite.data.splits import SplitOptions, load_protocol_splits
from suite.models.registry import build_backbone
from suite.core.seeding import seed_everything
from suite.core.typed import from_mapping
from suite.run.training import train

BASELINE = "finetune"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "defense_name" in metafunc.fixturenames:
        names = sorted(DEFENSES.names(), key=lambda n: (n != BASELINE, n))  # baseline first
        metafunc.parametrize("defense_name", names)


@pytest.fixture(scope="module")
def splits(request: pytest.FixtureRequest):
    data = Path(os.environ.get("SUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    if not (data / "sst2_sentence" / "MANIFEST.json").is_file():
        pytest.skip(f"dataset mirror not found at {data}; set SUITE_DATA_DIR")
    os.environ["SUITE_DATA_DIR"] = str(data)
    n = request.config.getoption("--bench-examples")
    rows = request.config.getoption("--wetar-validation-rows")  # WETAR's validation mini-batches need the rows
    return load_protocol_splits("sst2_sentence", SplitOptions(train_limit=n, validation_limit=max(8, rows), test_limit=8))


def test_epoch_time(benchmark, splits, defense_name: str, epoch_medians: dict[str, float],
                    request: pytest.FixtureRequest, tmp_path: Path) -> None:
    backbone = request.config.getoption("--backbone")
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3 if backbone in ("cnn", "lstm") else 5e-5,
                      select="last", cpu_threads=1)
    cls = DEFENSES.get(defense_name)
    steps = request.config.getoption("--adv-steps")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    # --adv-steps K: the ascent steps of every defense with a perturbation (its other settings kept)
    options = {"perturbation": {"steps": steps}} if steps and "perturbation" in fields else {}
    if "validation_batch_size" in fields:  # WETAR: time the reweighted epoch (module docstring)
        options.update(source_epochs=0, train_attack="pwws", query_budget=2,  # the set's content does not time
                       validation_batch_size=request.config.getoption("--wetar-validation-rows"))

    epoch_seconds: list[float] = []

    def one_epoch() -> None:
        seed_everything(0)
        model, _ = build_backbone(backbone, splits, 0)
        defense = cls(from_mapping(cls.Config, options, f"--adv-steps {steps}: {defense_name}"), model)
        context = TrainingContext(train=splits.train, validation=splits.validation, device=torch.device("cpu"), seed=0,
                                  attack_cache_root=tmp_path / "attacks")  # training-time attacks (adv-aug, wetar)
        epoch_seconds.append(train(defense, context, cfg).epoch_seconds[0])

    # the benchmark's own stats include model building; the ratio uses the trainer's epoch timer
    benchmark.pedantic(one_epoch, rounds=request.config.getoption("--bench-rounds"), iterations=1,
                       warmup_rounds=1 if defense_name == BASELINE else 0)  # first epoch warms caches
    epoch_seconds[:] = epoch_seconds[-request.config.getoption("--bench-rounds"):]
    median = sorted(epoch_seconds)[len(epoch_seconds) // 2]
    epoch_medians[defense_name] = median
    benchmark.extra_info["backbone"] = backbone
    benchmark.extra_info["options"] = options
    benchmark.extra_info["train_examples"] = len(splits.train)
    benchmark.extra_info["epoch_seconds_median"] = round(median, 4)
    if BASELINE in epoch_medians:
        benchmark.extra_info["ratio_to_finetune"] = round(median / epoch_medians[BASELINE], 3)
