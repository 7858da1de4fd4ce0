"""FLAT (defenses.flat) and adversarial data augmentation (defenses.adversarial_augmentation):
the core math by hand on tiny models, and the round structure."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from defenses import DEFENSES
from defenses.adversarial_augmentation import (AdaConfig, AdvAugConfig, AdversarialAugmentation,
                                               adversarial_example, attacked_subset)
from defenses.base import TrainingContext
from defenses.flat import (Flat, FlatConfig, WordMaskClassifier, bernoulli_entropy, importance_loss,
                           substituted_pairs)
from suite.core.errors import SuiteError
from suite.data.examples import Example
from suite.models.batching import make_batch
from suite.models.loading import load_classifier
from suite.models.text_processing import Vocabulary
from suite.models.word_models import KimCNN


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _three_word_model() -> tuple[WordMaskClassifier, dict[str, torch.Tensor]]:
    """A masked CNN over the vocabulary {good, fine, bad} with hand-set embeddings and mask network."""
    vocab = Vocabulary(["<pad>", "<unk>", "good", "fine", "bad"])
    inner = KimCNN(vocab, 2, embedding_dim=2, max_length=4, filter_sizes=(1,), num_filters=2)
    inner.backbone_name = "cnn"
    rows = {"good": torch.tensor([1.0, 0.0]), "fine": torch.tensor([0.5, 0.5]), "bad": torch.tensor([-1.0, 2.0])}
    model = WordMaskClassifier(inner, embedding_dim=2, mask_hidden=2)
    with torch.no_grad():
        for word, row in rows.items():
            inner.embedding.weight[vocab.index[word]] = row
        model.mask_net[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        model.mask_net[0].bias.copy_(torch.tensor([0.1, -0.2]))
        model.mask_net[2].weight.copy_(torch.tensor([[0.3, -0.4], [1.2, 0.7]]))
        model.mask_net[2].bias.copy_(torch.tensor([0.05, 0.25]))
    return model, rows


def _phi_by_hand(row: torch.Tensor) -> float:
    """φ = softmax(W2 tanh(W1 e + b1) + b2)[keep] = σ(v·h + c), v = W2[1] − W2[0], c = b2[1] − b2[0]."""
    h = [math.tanh(1.0 * row[0] - 1.0 * row[1] + 0.1), math.tanh(0.5 * row[0] + 2.0 * row[1] - 0.2)]
    z = (1.2 - 0.3) * h[0] + (0.7 + 0.4) * h[1] + (0.25 - 0.05)
    return 1.0 / (1.0 + math.exp(-z))


def test_importance_loss_value_and_gradient_by_hand() -> None:
    model, rows = _three_word_model()
    phi = model.word_importance(["good", "fine", "bad"])
    by_hand = [_phi_by_hand(rows[w]) for w in ("good", "fine", "bad")]
    assert phi.tolist() == pytest.approx(by_hand, abs=1e-6)

    # example 0 substituted good -> fine and bad -> fine; example 1 has no pairs; example 2: fine -> bad
    originals = model.word_importance(["good", "bad", "fine"])
    substitutes = model.word_importance(["fine", "fine", "bad"])
    loss = importance_loss(originals, substitutes, torch.tensor([0, 0, 2]), 3)
    g, f, b = by_hand
    expected = [abs(g - f) + abs(b - f), 0.0, abs(f - b)]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)

    # d/d b2[keep] of Σ|φ_a − φ_b|: sign(φ_a − φ_b) (φ_a(1 − φ_a) − φ_b(1 − φ_b)) per pair
    loss.sum().backward()
    d = lambda p: p * (1 - p)  # noqa: E731  (dσ/dz)
    sign = lambda x: math.copysign(1.0, x)  # noqa: E731
    grad = sign(g - f) * (d(g) - d(f)) + sign(b - f) * (d(b) - d(f)) + sign(f - b) * (d(f) - d(b))
    assert model.mask_net[2].bias.grad[1].item() == pytest.approx(grad, abs=1e-6)
    assert model.mask_net[2].bias.grad[0].item() == pytest.approx(-grad, abs=1e-6)


def test_gumbel_mask_expectation_is_the_keep_probability() -> None:
    model, _ = _three_word_model()
    model.train()
    torch.manual_seed(0)
    logits = torch.tensor([[[0.0, 1.5], [0.3, -0.8], [0.0, 0.0]]])  # keep logits: φ = σ(1.5), σ(-1.1), 0.5
    phi = model.keep_probability(logits)
    draws = torch.stack([model.masks(logits) for _ in range(20000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}  # hard (binary) masks in the forward pass
    # Monte Carlo: std of the mean <= 0.5 / sqrt(20000) = 0.0035; 4 sigma
    assert draws.mean(dim=0).flatten().tolist() == pytest.approx(phi.flatten().tolist(), abs=0.015)
    model.eval()
    torch.testing.assert_close(model.masks(logits), phi)


def test_eval_output_is_the_model_on_embeddings_times_phi() -> None:
    model, _ = _three_word_model()
    model.eval()
    batch = make_batch(model, [Example("a", ("good bad fine",), 0), Example("b", ("fine",), 1)], torch.device("cpu"))
    embeds = model.inner.embed(batch)
    phi = model.keep_probability(model.mask_logits(embeds))
    expected = model.inner.forward_embeddings(embeds * phi.unsqueeze(-1), batch).logits
    torch.testing.assert_close(model(batch).logits, expected, rtol=0, atol=0)


def test_entropy_term_is_subtracted() -> None:
    """Loss = CE − β H: raising β lowers the loss by (Δβ) H, and its gradient moves φ towards 0.5."""
    model, _ = _three_word_model()
    model.eval()  # no Gumbel noise: the two losses differ only by the entropy term
    train = [Example("t/0", ("good bad",), 0), Example("t/1", ("fine good",), 1)]
    batch = make_batch(model, train, torch.device("cpu"), [0, 1])
    context = TrainingContext(train=train, validation=[], device=torch.device("cpu"), seed=0)
    losses = {}
    for beta in (0.0, 1.0):
        defense = Flat(FlatConfig(beta=beta, gamma=0.0), model.inner)
        defense.model = model
        losses[beta] = defense.per_example_loss(batch, context)
    embeds = model.inner.embed(batch)
    keep = model.keep_probability(model.mask_logits(embeds))
    mask = batch["attention_mask"].float()
    entropy = (bernoulli_entropy(keep) * mask).sum(1) / mask.sum(1)
    assert (entropy > 0).all()
    torch.testing.assert_close(losses[1.0], losses[0.0] - entropy)
    p = torch.tensor([0.9, 0.2], requires_grad=True)
    (-bernoulli_entropy(p).sum()).backward()  # minimising −H pushes p towards 0.5
    assert p.grad[0] > 0 and p.grad[1] < 0
    assert bernoulli_entropy(torch.tensor(0.5)).item() == pytest.approx(math.log(2))


def test_substituted_pairs_and_adversarial_examples() -> None:
    assert substituted_pairs("a dull piece of cinema", "a boring piece of film") == [("dull", "boring"),
                                                                                    ("cinema", "film")]
    assert substituted_pairs("a dull piece", "a dull") == []  # not word for word: no pairs
    ex = Example("train/7", ("a dull piece",), 1)
    adv = adversarial_example(ex, {"result": "successful", "perturbed": "a boring piece"}, 2)
    assert adv == Example("train/7#adv2", ("a boring piece",), 1)
    assert adversarial_example(ex, {"result": "failed", "perturbed": "a boring piece"}, 2) is None
    pair = Example("train/8", ("q?", "a."), 0)
    assert adversarial_example(pair, {"result": "successful", "perturbed": "q!\na."}, 1).texts == ("q!", "a.")


def test_attacked_subset_is_seeded_and_in_train_order() -> None:
    train = [Example(f"t/{i}", (f"w{i}",), 0) for i in range(50)]
    context = TrainingContext(train=train, validation=[], device=torch.device("cpu"), seed=3)
    first = attacked_subset(train, 10, context)
    assert first == attacked_subset(train, 10, context) and len(first) == 10
    assert [train.index(e) for e in first] == sorted(train.index(e) for e in first)
    assert attacked_subset(train, None, context) == train
    other = TrainingContext(train=train, validation=[], device=torch.device("cpu"), seed=4)
    assert attacked_subset(train, 10, other) != first


def test_rounds_attack_the_latest_model_and_add_successful_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """adv-aug's phases: base, then each round trains on D ∪ D' from attacking the model of the phase before."""
    from suite.core.seeding import seed_everything
    from suite.run.config import TrainConfig
    from suite.run.training import train

    seed_everything(0)
    words = ["good", "great", "bad", "awful", "the", "movie"]
    data = [Example(f"t/{i}", (" ".join(words[(i + j) % 6] for j in range(3)),), i % 2) for i in range(8)]
    vocab = Vocabulary.build(words, 0)
    model = KimCNN(vocab, 2, embedding_dim=4, max_length=6, filter_sizes=(2,), num_filters=2)
    model.backbone_name = "cnn"
    defense = AdversarialAugmentation(AdvAugConfig(rounds=2, attack_examples=4), model)
    seen: list[tuple[str, int]] = []
    sizes: list[int] = []

    def fake_attack(self, examples, attack_name, **options):  # the attack itself is tested elsewhere
        seen.append((attack_name, len(examples)))
        return [{"result": "successful" if i % 2 == 0 else "failed", "perturbed": ex.texts[0] + " movie"}
                for i, ex in enumerate(examples)]

    monkeypatch.setattr(TrainingContext, "attack", fake_attack)
    context = TrainingContext(train=list(data), validation=data[:2], device=torch.device("cpu"), seed=0)
    original_on_phase_start = defense.on_phase_start
    defense.on_phase_start = lambda phase, ctx: (sizes.append(len(ctx.train)), original_on_phase_start(phase, ctx))
    result = train(defense, context, TrainConfig(epochs=1, batch_size=4, lr=1e-2, optimizer="adam"))
    assert result.phase == ["base", "round1", "round2"]
    assert seen == [("pwws", 4), ("pwws", 4)]
    assert sizes == [8, 10, 10]  # 8 originals + the 2 successful of 4 attacked, never accumulated
    assert [c["successful"] for c in defense.round_counts] == [2, 2]
    assert context.train[-1].id.endswith("#adv2")


def test_configs_and_registration() -> None:
    assert DEFENSES.get("ada").Config() == AdaConfig()
    assert AdaConfig().train_attack == "textfooler" and AdaConfig().rounds == 1
    assert issubclass(DEFENSES.get("ada"), AdversarialAugmentation)  # one implementation
    assert FlatConfig().beta == 0.1 and FlatConfig().gamma == 0.001
    with pytest.raises(SuiteError, match="rounds"):
        AdvAugConfig(rounds=0)
    with pytest.raises(SuiteError, match="beta"):
        FlatConfig(beta=-1.0)


def test_flat_checkpoint_reloads_with_its_masks(tmp_path: Path) -> None:
    model, _ = _three_word_model()
    model.eval()
    model.save(tmp_path)
    loaded = load_classifier(tmp_path)
    assert isinstance(loaded, WordMaskClassifier)
    batch = make_batch(model, [Example("a", ("good bad fine",), 0)], torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)
        torch.testing.assert_close(loaded.word_importance(["good"]), model.word_importance(["good"]))
    assert F.softmax(model(batch).logits, -1).shape == (1, 2)
