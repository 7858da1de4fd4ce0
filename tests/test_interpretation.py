"""FLAT §5.2 interpretation consistency: the metrics by hand, IG completeness and its units, the
per-attack aggregation (class averaging, counts, sampling) and seeded LIME, on tiny models."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attacks.interpretation import (
    Attribution,
    aligned_pairs,
    consistency,
    ig_units,
    integrated_gradients,
    kendall_tau,
    lime_attributions,
    lime_units,
    topk_intersection,
    topk_positions,
)
from suite.models.base import Batch, ModelOutput, TextClassifier
from suite.models.text_processing import Vocabulary
from suite.models.word_models import KimCNN, LSTMClassifier, WordLevelClassifier
from suite.models.wrapped import WrappedClassifier

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the movie is good and the plot is fine", "a dull and boring film with bad acting",
         "the plot is bad", "the acting is dull", "a great film , truly wonderful", "an awful mess of a movie"]
MLFLOW_NAME = re.compile(r"^[\w\-./ ]+$")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(TEXTS + ["film tedious awful motion picture x"], 0)


def _cnn(vocab: Vocabulary) -> KimCNN:
    torch.manual_seed(0)
    return KimCNN(vocab, num_labels=3, embedding_dim=8, max_length=12, num_filters=4)


def _lstm(vocab: Vocabulary) -> LSTMClassifier:
    torch.manual_seed(0)
    return LSTMClassifier(vocab, num_labels=2, embedding_dim=8, max_length=12, hidden_size=6)


class BagOfWords(WordLevelClassifier):
    """logits = sum of the (unpadded) word embeddings: embedding dim = classes, so a word's row is
    its vote; LIME and IG must find the voting word."""

    def __init__(self, vocab: Vocabulary, votes: dict[str, tuple[float, float]], max_length: int = 12) -> None:
        super().__init__(vocab, 2, 2, max_length)
        with torch.no_grad():
            self.embedding.weight.zero_()
            for word, vote in votes.items():
                self.embedding.weight[vocab.index[word]] = torch.tensor(vote)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        return ModelOutput((embeds * batch["attention_mask"][..., None]).sum(dim=1))


class Scaled(WrappedClassifier):
    """A defense's wrapper stand-in: scales the embeddings per dimension before the inner model."""

    def __init__(self, inner: TextClassifier) -> None:
        super().__init__(inner)
        self.scale = torch.nn.Parameter(torch.linspace(0.2, 3.0, inner.embedding.embedding_dim))

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        return self.inner.forward_embeddings(embeds * self.scale, batch, return_features=return_features)


def _gap(model: TextClassifier, text: tuple[str, ...], label: int) -> float:
    """f(x) - f(0) for the label's softmax probability, computed directly."""
    model.eval()
    with torch.no_grad():
        batch = model.encode([text])
        embeds = model.embed(batch)
        p_x = torch.softmax(model.forward_embeddings(embeds, batch).logits, -1)[0, label]
        p_b = torch.softmax(model.forward_embeddings(torch.zeros_like(embeds), batch).logits, -1)[0, label]
    return float(p_x - p_b)


# --- 1. the metrics by hand ---------------------------------------------------------------------------
def test_kendall_tau_by_hand() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # a tie in a (tau-b): C = 5, D = 0, n0 = 6, ties in a = 1 -> 5 / sqrt(5 * 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall_tau([0.5, 0.5, 0.5], [1, 2, 3]))  # constant: undefined
    assert math.isnan(kendall_tau([1.0], [2.0]))
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])


def test_topk_intersection_by_hand() -> None:
    a, b = [0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.7, 0.1]
    assert topk_intersection(a, b, 1) == 0.0  # {2} vs {1}
    assert topk_intersection(a, b, 2) == 0.5  # {2, 0} vs {1, 2}
    assert topk_intersection(a, b, 3) == pytest.approx(2 / 3)  # {2, 0, 3} vs {1, 2, 0}
    assert topk_intersection(a, b, 10) == 1.0  # k capped at the length 4
    # ties go to the earlier position: top-2 of a = {0, 1}, of b = {1, 2}
    assert topk_intersection([1, 1, 1, 0], [0, 1, 1, 1], 2) == 0.5
    assert topk_intersection([1, 1, 0, 0], [1, 0, 1, 0], 1) == 1.0  # position 0 wins both ties
    assert topk_positions([1, 1, 1, 0], 2).tolist() == [0, 1]
    # signed importance by default, |score| on request
    assert topk_intersection([-5, 1, 2], [-4, 3, 1], 1) == 0.0
    assert topk_intersection([-5, 1, 2], [-4, 3, 1], 1, magnitude=True) == 1.0
    with pytest.raises(ValueError):
        topk_intersection(a, b, 0)


def test_synonym_at_the_same_position_counts_as_the_same_word() -> None:
    original = Attribution(("the", "movie", "is", "great"), np.array([0.1, 0.2, 0.0, 0.9]))
    adversarial = Attribution(("the", "movie", "is", "terrific"), np.array([0.0, 0.3, 0.1, 0.7]))
    assert original.words[3] != adversarial.words[3]
    assert topk_intersection(original.scores, adversarial.scores, 1) == 1.0
    assert topk_intersection(original.scores, adversarial.scores, 2) == 1.0  # {3, 1} both


# --- 2. IG completeness ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build,steps", [(_cnn, 300), (_lstm, 50)], ids=["cnn", "lstm"])
def test_ig_completeness_word_models(vocab: Vocabulary, build: Any, steps: int) -> None:
    model = build(vocab).train()  # IG must switch dropout off itself, and give the mode back
    texts = [(t,) for t in TEXTS[:4]]
    # the label whose probability moves most from the baseline: a relative check needs a gap
    labels = [max(range(model.num_labels), key=lambda y: abs(_gap(model, t, y))) for t in texts]
    model.train()
    result = integrated_gradients(model, texts, labels, n_steps=steps, batch_size=3)
    assert model.training
    for text, label, attr in zip(texts, labels, result):
        gap = _gap(model, text, label)
        assert abs(gap) > 1e-4
        assert attr.gap == pytest.approx(gap, rel=1e-4, abs=1e-7)
        assert attr.outside == 0.0  # padding embeddings are the zero baseline
        assert attr.scores.dtype == np.float64 and len(attr.scores) == len(text[0].split())
        assert abs(attr.scores.sum() - gap) <= 0.01 * abs(gap)
        assert abs(attr.delta) <= 0.01 * abs(gap)
        assert attr.delta == pytest.approx(attr.scores.sum() - attr.gap, abs=1e-6)  # captum's sign


def test_ig_goes_through_the_wrapper(vocab: Vocabulary) -> None:
    wrapped = Scaled(_lstm(vocab))
    text, label = (TEXTS[1],), 1
    outer = integrated_gradients(wrapped, [text], [label])[0]
    inner = integrated_gradients(wrapped.inner, [text], [label])[0]
    assert outer.words == inner.words == tuple(TEXTS[1].split())
    gap = _gap(wrapped, text, label)
    assert abs(gap - _gap(wrapped.inner, text, label)) > 1e-4  # the wrapper changes the function
    assert abs(outer.scores.sum() - gap) <= 0.01 * abs(gap)
    assert not np.allclose(outer.scores, inner.scores)


def test_ig_finds_the_voting_word(vocab: Vocabulary) -> None:
    model = BagOfWords(vocab, {"good": (0.0, 3.0), "bad": (3.0, 0.0)})
    [attr] = integrated_gradients(model, [("the movie is good and the plot is bad",)], [1])
    assert attr.words[3] == "good" and attr.words[8] == "bad"
    assert attr.scores[3] > 0 > attr.scores[8]
    assert np.all(np.delete(attr.scores, [3, 8]) == 0.0)  # zero embeddings: zero attribution


def test_word_level_units_are_the_truncated_model_tokens(vocab: Vocabulary) -> None:
    model = _lstm(vocab)  # max_length 12
    long = " ".join(["good"] * 20)
    assert ig_units(model, [("The movie, isn't good!",), (long,), ("",)]) == [
        ("the", "movie", ",", "is", "n't", "good", "!"), ("good",) * 12, ("<unk>",)]
    assert len(integrated_gradients(model, [(long,)], [0])[0].scores) == 12


# --- tiny BERT (offline: a config and a vocab file written here) --------------------------------------------------
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad", "un", "##believ",
              "##able", "a", ",", "film", "plot"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> TextClassifier:
    transformers = pytest.importorskip("transformers")
    from suite.models.transformer import HFClassifier

    vocab_file = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab_file.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    try:
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    except Exception as exc:  # pragma: no cover - only without the tokenizers backend
        pytest.skip(f"cannot build a fast BERT tokenizer offline: {exc}")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=32,
                                     num_labels=2, initializer_range=1.0)
    return HFClassifier(transformers.BertForSequenceClassification(config), tokenizer, 16, "tiny-bert", "test")


def test_ig_completeness_hf(tiny_bert: TextClassifier) -> None:
    texts = [("the movie is unbelievable, good",), ("a bad film",), ("the plot", "is good")]
    labels = [0, 1, 1]
    for text, label, attr in zip(texts, labels, integrated_gradients(tiny_bert, texts, labels, n_steps=50)):
        gap = _gap(tiny_bert, text, label)
        assert abs(gap) > 1e-3
        # words + special tokens carry all of f(x) - f(0)
        assert abs(attr.scores.sum() + attr.outside - gap) <= 0.01 * abs(gap)
        assert abs(attr.delta) <= 0.01 * abs(gap)


def test_hf_subwords_are_summed_into_words(tiny_bert: TextClassifier) -> None:
    from captum.attr import IntegratedGradients

    text, label = ("the movie is unbelievable, good",), 0
    pieces = tiny_bert.tokenizer.convert_ids_to_tokens(tiny_bert.encode([text])["input_ids"][0])
    assert pieces == ["[CLS]", "the", "movie", "is", "un", "##believ", "##able", ",", "good", "[SEP]"]
    [attr] = integrated_gradients(tiny_bert, [text], [label], n_steps=40)
    assert attr.words == ("the", "movie", "is", "unbelievable", ",", "good")

    # token attributions computed here, independently, with captum
    tiny_bert.eval()
    batch = tiny_bert.encode([text])
    embeds = tiny_bert.embed(batch).detach()

    def prob(e: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        b = {"input_ids": batch["input_ids"], "attention_mask": mask, "token_type_ids": types}
        return torch.softmax(tiny_bert.forward_embeddings(e, b).logits, -1)

    tokens = IntegratedGradients(prob).attribute(
        embeds, baselines=torch.zeros_like(embeds), target=label, n_steps=40,
        additional_forward_args=(batch["attention_mask"], batch["token_type_ids"]))[0].double().sum(-1)
    tokens = tokens.detach().numpy()
    expected = [tokens[1], tokens[2], tokens[3], tokens[4] + tokens[5] + tokens[6], tokens[7], tokens[8]]
    np.testing.assert_allclose(attr.scores, expected, rtol=1e-4, atol=1e-9)
    assert attr.outside == pytest.approx(tokens[0] + tokens[9], rel=1e-4, abs=1e-9)  # [CLS] + [SEP]
    assert abs(tokens[4]) > 1e-6 and abs(tokens[6]) > 1e-6  # the pieces did contribute


def test_hf_units_span_both_columns_without_specials(tiny_bert: TextClassifier) -> None:
    assert ig_units(tiny_bert, [("the plot", "is unbelievable")]) == [("the", "plot", "is", "unbelievable")]


# --- 4. consistency(): class averaging, counts, sampling ------------------------------------------------------
def _record(original: list[str], perturbed: str, label: int, result: str = "successful") -> dict[str, Any]:
    return {"original": original, "perturbed": perturbed, "label": label, "result": result}


RECORDS = [
    _record([TEXTS[0]], "the film is good and the plot is fine", 0),
    _record([TEXTS[1]], "a dull and tedious film with bad acting", 0, "failed"),
    _record([TEXTS[2], TEXTS[3]], "the plot is awful\nthe acting is dull", 1),  # two columns, split cleanly
    _record([TEXTS[4]], "a great movie , truly wonderful", 1, "skipped"),
    _record([TEXTS[5]], TEXTS[5], 1, "failed"),  # unchanged
    _record(["good movie"], "good motion picture", 1),  # 2 vs 3 words: unaligned
    _record(["a film", "the plot"], "a movie the plot", 0),  # no line break: cannot split the columns
]


def _by_hand(model: TextClassifier, pairs: list[tuple[tuple[str, ...], tuple[str, ...], int]],
             k: int) -> tuple[list[float], list[float], list[int]]:
    taus, tis, labels = [], [], []
    for original, perturbed, label in pairs:
        a, b = integrated_gradients(model, [original, perturbed], [label, label], n_steps=50)
        taus.append(kendall_tau(a.scores, b.scores))
        tis.append(topk_intersection(a.scores, b.scores, k))
        labels.append(label)
    return taus, tis, labels


def test_consistency_class_average_and_counts(vocab: Vocabulary) -> None:
    model = _lstm(vocab)
    out = consistency(model, RECORDS, k=3, ks=(1, 3, 12))
    pairs = [((TEXTS[0],), ("the film is good and the plot is fine",), 0),
             ((TEXTS[1],), ("a dull and tedious film with bad acting",), 0),
             ((TEXTS[2], TEXTS[3]), ("the plot is awful", "the acting is dull"), 1)]
    taus, tis, _ = _by_hand(model, pairs, 3)
    macro_tau, pooled_tau = (np.mean(taus[:2]) + taus[2]) / 2, np.mean(taus)
    assert abs(macro_tau - pooled_tau) > 1e-3  # the case tells the two apart
    assert out["kendall_tau"] == pytest.approx(macro_tau, abs=1e-6)
    assert out["kendall_tau_pooled"] == pytest.approx(pooled_tau, abs=1e-6)
    assert out["topk_intersection"] == pytest.approx((np.mean(tis[:2]) + tis[2]) / 2, abs=1e-9)
    assert out["topk_intersection_pooled"] == pytest.approx(np.mean(tis), abs=1e-9)
    assert out["topk_intersection_k3"] == out["topk_intersection"]
    assert out["topk_intersection_k12"] == 1.0  # k capped at each pair's length
    _, ti1, _ = _by_hand(model, pairs, 1)
    assert out["topk_intersection_k1"] == pytest.approx((np.mean(ti1[:2]) + ti1[2]) / 2, abs=1e-9)
    assert {k: out[k] for k in ("records", "records_skipped", "records_unchanged", "pairs_unaligned", "pairs",
                                "classes", "kendall_tau_undefined")} == {
        "records": 7, "records_skipped": 1, "records_unchanged": 1, "pairs_unaligned": 2, "pairs": 3,
        "classes": 2, "kendall_tau_undefined": 0}
    assert 0.0 <= out["ig_max_abs_delta"] < 0.01
    assert all(MLFLOW_NAME.match(name) for name in out) and all(isinstance(v, float) for v in out.values())
    assert consistency(model, RECORDS, k=3, ks=(1, 3, 12)) == out  # same numbers again


def test_consistency_drops_undefined_tau_only(vocab: Vocabulary) -> None:
    model = BagOfWords(vocab, {"good": (0.0, 2.0), "bad": (2.0, 0.0), "fine": (0.0, 1.0)})
    records = [_record(["the movie is good and fine"], "the movie is bad and fine", 1),
               _record(["zzz yyy"], "zzz qqq", 0)]  # unknown words: all-zero attributions
    out = consistency(model, records, method="ig", k=1, ks=(1,))
    a, b = integrated_gradients(model, [("the movie is good and fine",), ("the movie is bad and fine",)], [1, 1])
    assert out["kendall_tau_undefined"] == 1 and out["pairs"] == 2
    assert out["kendall_tau"] == pytest.approx(kendall_tau(a.scores, b.scores), abs=1e-9)
    assert out["kendall_tau_pooled"] == out["kendall_tau"]
    # top-1: position 3 ("good", then "fine" at 5) vs 5 ("fine"): 0; the constant pair: position 0 both: 1
    assert out["topk_intersection_pooled"] == 0.5
    assert out["topk_intersection"] == 0.5  # classes 1 and 0, one pair each


def test_consistency_without_pairs_is_nan_not_an_error(vocab: Vocabulary) -> None:
    out = consistency(_lstm(vocab), [RECORDS[3], RECORDS[4], RECORDS[5]])
    assert out["pairs"] == 0 and out["records"] == 3 and out["pairs_unaligned"] == 1
    assert math.isnan(out["kendall_tau"]) and math.isnan(out["topk_intersection_k10"])
    assert math.isnan(out["ig_max_abs_delta"])


def test_max_pairs_sampling_is_seeded_and_in_record_order(vocab: Vocabulary) -> None:
    model = _lstm(vocab)
    words = TEXTS[0].split()
    records = [_record([" ".join(words)], " ".join(words[:i] + ["film"] + words[i + 1:]), i % 2)
               for i in range(9)]
    chosen, counts = aligned_pairs(model, records, max_pairs=4, seed=3)
    expected = np.sort(np.random.default_rng(3).choice(9, size=4, replace=False)).tolist()
    assert [p.index for p in chosen] == expected
    assert [p.index for p in aligned_pairs(model, records, max_pairs=4, seed=3)[0]] == expected
    assert [p.index for p in aligned_pairs(model, records, max_pairs=4, seed=4)[0]] != expected
    assert len(aligned_pairs(model, records, max_pairs=20, seed=3)[0]) == 9
    out = consistency(model, records, max_pairs=4, seed=3, k=2, ks=(2,))
    assert out["pairs"] == 4 and out == consistency(model, records, max_pairs=4, seed=3, k=2, ks=(2,))
    subset = consistency(model, [records[i] for i in expected], k=2, ks=(2,))
    assert subset["kendall_tau"] == pytest.approx(out["kendall_tau"], abs=1e-9)


# --- 5. LIME ---------------------------------------------------------------------------------------------------
def test_lime_is_seeded_and_finds_the_voting_word(vocab: Vocabulary) -> None:
    model = BagOfWords(vocab, {"good": (0.0, 3.0), "bad": (3.0, 0.0)})
    texts = [("the movie is good",), ("the movie is bad",)]
    first = lime_attributions(model, texts, [1, 1], num_samples=200, seed=0)
    assert first == lime_attributions(model, texts, [1, 1], num_samples=200, seed=0)
    assert first[0] != lime_attributions(model, texts, [1, 1], num_samples=200, seed=1)[0]
    good, bad = first
    assert good.words == ("the", "movie", "is", "good") and bad.words == ("the", "movie", "is", "bad")
    assert good.delta is None and good.scores.dtype == np.float64
    assert int(np.argmax(good.scores)) == 3 and good.scores[3] > 0.1
    assert int(np.argmin(bad.scores)) == 3 and bad.scores[3] < -0.1
    assert np.all(np.abs(np.delete(good.scores, 3)) < 0.5 * good.scores[3])


def test_lime_units_align_by_position(vocab: Vocabulary) -> None:
    original, adversarial = ("a great film , truly wonderful",), ("a great movie , truly wonderful",)
    assert lime_units([("good, movie",), ("the plot", "is good")]) == [("good,", "movie"),
                                                                      ("the", "plot", "is", "good")]
    model = _lstm(vocab)
    a, b = lime_attributions(model, [original, adversarial], [1, 1], num_samples=200)
    assert len(a.scores) == len(b.scores) == 6
    assert [i for i, (x, y) in enumerate(zip(a.words, b.words)) if x != y] == [2]
    out = consistency(model, [_record(list(original), adversarial[0], 1)], method="lime", lime_samples=200, k=2)
    assert out["pairs"] == 1 and "ig_max_abs_delta" not in out
    assert out["kendall_tau"] == pytest.approx(kendall_tau(a.scores, b.scores), abs=1e-12)
    assert out["topk_intersection"] == topk_intersection(a.scores, b.scores, 2)


def test_lime_multi_column_is_split_back_for_the_model(vocab: Vocabulary) -> None:
    model = BagOfWords(vocab, {"good": (0.0, 3.0)})
    [attr] = lime_attributions(model, [("the movie", "is good")], [1], num_samples=200)
    assert attr.words == ("the", "movie", "is", "good") and int(np.argmax(attr.scores)) == 3


# --- determinism across processes ---------------------------------------------------------------------------------
_SCRIPT = """
import json, torch
torch.set_num_threads(1)
from suite.core.seeding import deterministic_mode
deterministic_mode()  # the protocol's settings, as every run (and the test process) has them
from attacks.interpretation import integrated_gradients, lime_attributions
from suite.models.text_processing import Vocabulary
from suite.models.word_models import LSTMClassifier
texts = json.loads({texts!r})
vocab = Vocabulary.build(texts, 0)
torch.manual_seed(0)
model = LSTMClassifier(vocab, num_labels=2, embedding_dim=8, max_length=12, hidden_size=6)
pairs = [(t,) for t in texts]
ig = integrated_gradients(model, pairs, [0, 1])
lime = lime_attributions(model, pairs, [0, 1], num_samples=100, seed=5)
print(json.dumps([[a.scores.tolist() for a in ig], [a.scores.tolist() for a in lime]]))
"""


@pytest.mark.usefixtures("one_torch_thread")
def test_same_numbers_in_a_new_process() -> None:
    """Same machine, same determinism settings (suite.core.seeding.deterministic_mode, one torch
    thread): a new process gives bit-identical IG and LIME scores."""
    from suite.core.seeding import deterministic_mode

    deterministic_mode()
    texts = TEXTS[:2]
    code = _SCRIPT.format(texts=json.dumps(texts))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    vocab = Vocabulary.build(texts, 0)
    torch.manual_seed(0)
    model = LSTMClassifier(vocab, num_labels=2, embedding_dim=8, max_length=12, hidden_size=6)
    pairs = [(t,) for t in texts]
    ours = [[a.scores.tolist() for a in integrated_gradients(model, pairs, [0, 1])],
            [a.scores.tolist() for a in lime_attributions(model, pairs, [0, 1], num_samples=100, seed=5)]]
    assert ours == theirs
