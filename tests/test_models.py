"""FLAT preprocessing, vocabulary, and the word-level backbones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.models.text_processing import PAD, UNK, Vocabulary, clean_text, preprocessing_for, tokenize
from suite.models.word_models import KimCNN, LSTMClassifier

TEXTS = ["the movie was great , really great !", "the plot wasn't good", "a dull , boring film",
         "great acting but a weak plot"]


# --- preprocessing ------------------------------------------------------------------------------

def test_clean_text_lowercases_and_strips_special_characters() -> None:
    assert clean_text("Hello   WORLD") == "hello world"
    assert clean_text("a@b#c$d") == "a b c d"
    assert clean_text("  <br/> ok  ") == "br ok"
    assert clean_text("x\ty\nz") == "x y z"


def test_clean_text_splits_clitics_and_punctuation() -> None:
    assert clean_text("It's good") == "it 's good"
    assert clean_text("I don't know") == "i do n't know"
    assert clean_text("we've they're I'd you'll") == "we 've they 're i 'd you 'll"
    assert clean_text("Wow,great!(yes)?") == "wow , great ! ( yes ) ?"


def test_tokenize() -> None:
    assert tokenize("Isn't it FUN?!") == ["is", "n't", "it", "fun", "?", "!"]
    assert tokenize("   ") == []


def test_preprocessing_follows_flat_table6() -> None:
    assert preprocessing_for("trec") == (0, 15, "FLAT Table 6")
    assert preprocessing_for("imdb") == (5, 250, "FLAT Table 6")
    threshold, length, origin = preprocessing_for("qnli")
    assert (threshold, length) == (0, 80) and origin.startswith("suite default")


def test_vocabulary_threshold_keeps_counts_at_or_above() -> None:
    texts = ["a a a b b c", "a b d"]  # a:4 b:3 c:1 d:1
    assert Vocabulary.build(texts, 0).words == [PAD, UNK, "a", "b", "c", "d"]
    assert Vocabulary.build(texts, 1).words == [PAD, UNK, "a", "b", "c", "d"]
    assert Vocabulary.build(texts, 3).words == [PAD, UNK, "a", "b"]
    assert Vocabulary.build(texts, 4).words == [PAD, UNK, "a"]
    assert Vocabulary.build(texts, 5).words == [PAD, UNK]


def test_vocabulary_ids() -> None:
    vocab = Vocabulary.build(["a a b"], 0)
    assert len(vocab) == 4
    assert vocab.ids("A b zzz a", 10) == [2, 3, 1, 2]  # unknown word -> UNK (1)
    assert vocab.ids("a b a b", 3) == [2, 3, 2]  # truncated
    assert vocab.ids("!!!", 5) == [1, 1, 1]  # punctuation tokens, unknown here
    assert vocab.ids("", 5) == [1]  # never empty


# --- models ---------------------------------------------------------------------------------------

@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(TEXTS, 0)


def _texts(items: list[str]) -> list[tuple[str, ...]]:
    return [(t,) for t in items]


@pytest.fixture(params=["cnn", "lstm"])
def model(request, vocab):
    torch.manual_seed(0)
    if request.param == "cnn":
        m = KimCNN(vocab, num_labels=3, embedding_dim=8, max_length=12, num_filters=4)
    else:
        m = LSTMClassifier(vocab, num_labels=3, embedding_dim=8, max_length=12, hidden_size=6)
    m.backbone_name = request.param
    return m.eval()


def test_encode_pads_to_max_length(vocab) -> None:
    m = KimCNN(vocab, 2, embedding_dim=8, max_length=6, num_filters=2)
    batch = m.encode(_texts(["the movie was great", "a b c d e f g h i j"]))
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["input_ids"][0, 4:].tolist() == [0, 0]


def test_cnn_max_length_covers_widest_filter(vocab) -> None:
    assert KimCNN(vocab, 2, max_length=2).max_length == 5


def test_forward_shapes(model) -> None:
    batch = model.encode(_texts(TEXTS))
    out = model(batch, return_features=True)
    assert out.logits.shape == (4, 3)
    expected_features = 3 * 4 if isinstance(model, KimCNN) else 6
    assert out.features is not None and out.features.shape == (4, expected_features)
    assert model(batch).features is None
    assert model.embed(batch).shape == (4, 12, 8)


def test_forward_equals_forward_embeddings(model) -> None:
    batch = model.encode(_texts(TEXTS))
    with torch.no_grad():
        direct = model(batch).logits
        via_embeddings = model.forward_embeddings(model.embed(batch), batch).logits
        perturbed = model.forward_embeddings(model.embed(batch) + 0.5, batch).logits
    torch.testing.assert_close(direct, via_embeddings, rtol=0, atol=0)
    assert not torch.allclose(direct, perturbed)  # the embeddings really are the input


def test_embedding_gradients_flow(model) -> None:
    batch = model.encode(_texts(TEXTS))
    embeds = model.embed(batch).detach().requires_grad_(True)
    model.forward_embeddings(embeds, batch).logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_lstm_ignores_padding(vocab) -> None:
    torch.manual_seed(0)
    m = LSTMClassifier(vocab, 2, embedding_dim=8, max_length=8, hidden_size=5).eval()
    texts = _texts(["the movie was great", "boring film"])
    with torch.no_grad():
        short = m(m.encode(texts)).logits
        m.max_length = 40
        long_batch = m.encode(texts)
        long = m(long_batch).logits
    assert long_batch["input_ids"].shape == (2, 40)
    torch.testing.assert_close(short, long)
    # and the sequence content does matter
    with torch.no_grad():
        other = m(m.encode(_texts(["the plot was dull", "great film"]))).logits
    assert not torch.allclose(short, other)


def test_init_embeddings_copies_pretrained_rows(vocab) -> None:
    m = KimCNN(vocab, 2, embedding_dim=4, max_length=8, num_filters=2)
    word_to_row = {"the": 0, "great": 1}
    matrix = np.array([[1, 1, 1, 1], [2, 2, 2, 2]], dtype=np.float32)
    facts = m.init_embeddings(word_to_row, matrix, seed=0)
    weight = m.embedding.weight.detach()
    assert weight[vocab.index["the"]].tolist() == [1, 1, 1, 1]
    assert weight[vocab.index["great"]].tolist() == [2, 2, 2, 2]
    assert weight[0].abs().sum() == 0  # padding
    others = weight[vocab.index["movie"]]
    assert others.abs().max() <= 0.25 and others.abs().sum() > 0
    assert facts == {"vocab_size": len(vocab), "pretrained_coverage": round(2 / (len(vocab) - 2), 4)}
    again = KimCNN(vocab, 2, embedding_dim=4, max_length=8, num_filters=2)
    again.init_embeddings(word_to_row, matrix, seed=0)
    torch.testing.assert_close(again.embedding.weight, m.embedding.weight, rtol=0, atol=0)


def test_save_and_load_round_trip(model, vocab, tmp_path: Path) -> None:
    batch = model.encode(_texts(TEXTS))
    with torch.no_grad():
        expected = model(batch).logits
    folder = tmp_path / "ckpt"
    model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    for path in folder.iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # no pickle stream
        assert not path.read_bytes().startswith(b"PK")  # no torch.save zip
    description = json.loads((folder / "model.json").read_text())
    assert description["backbone"] == model.backbone_name
    assert description["vocab"] == vocab.words and description["num_labels"] == 3

    torch.manual_seed(123)
    fresh = type(model)(vocab, num_labels=3, embedding_dim=8, max_length=12,
                        **({"num_filters": 4} if isinstance(model, KimCNN) else {"hidden_size": 6})).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(batch).logits, expected)
    fresh.load_weights(folder)
    with torch.no_grad():
        torch.testing.assert_close(fresh(batch).logits, expected, rtol=0, atol=0)
