"""CARL and RAR (carl_rar §3.2-3.3): memory banks (Eq. 5), the NCE loss of Eq. 2-4 on hand-computed
values, L_D's start step (Table 3), the tied reconstructor (§3.3) and its parameter count (Table 7),
and steps on the tiny CNN, a tiny BERT and a tiny ALBERT."""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from defenses import DEFENSES
from defenses.carl_rar import (CARL, RAR, CARLConfig, MemoryBanks, NegativeSampler, RARConfig, Reconstructor,
                               contrastive_term, estimate_z, momentum_update, nce_loss, negative_scores,
                               token_forward)
from defenses.embedding_at import FreeLB, FreeLBConfig
from defenses.perturbation import PerturbationConfig
from suite.core.errors import SuiteError
from suite.core.typed import from_mapping
from suite.models.batching import make_batch
from suite.models.text_processing import Vocabulary
from suite.models.word_models import LSTMClassifier
from suite.run.config import TrainConfig
from suite.run.training import checked_extra_modules, extra_param_groups, train
from test_trainer_v2 import FILLER, NEGATIVE, POSITIVE, context_for, synthetic, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
PERTURBATION = PerturbationConfig(steps=2, step_size=0.1, init_magnitude=0.6, max_norm=0.0)


# --- Eq. 5: the memory banks ------------------------------------------------------------------------------

def test_momentum_update_mixes_renormalises_and_copies_on_first_write() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    written = torch.tensor([True, False, True])
    features = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    momentum_update(memory, written, torch.tensor([0, 1]), features, 0.5)
    s = 1 / math.sqrt(2)  # 0.5 * [1, 0] + 0.5 * [0, 1] = [0.5, 0.5], renormalised
    torch.testing.assert_close(memory, torch.tensor([[s, s], [0.6, 0.8], [3.0, 4.0]]))
    assert written.tolist() == [True, True, True]
    momentum_update(memory, written, torch.tensor([1]), torch.tensor([[1.0, 0.0]]), 0.75)
    v = [0.75 * 0.6 + 0.25, 0.75 * 0.8]  # M v + (1 - M) f
    n = math.hypot(*v)
    torch.testing.assert_close(memory[1], torch.tensor([v[0] / n, v[1] / n]))


def test_memory_banks_are_buffers_with_unit_norm_random_init() -> None:
    banks = MemoryBanks(500, 64, torch.Generator().manual_seed(0))
    assert list(banks.parameters()) == []
    assert set(dict(banks.named_buffers())) == {"original", "adversarial", "written", "z"}
    norms = banks.original.norm(dim=1)
    assert abs(float((norms ** 2).mean()) - 1.0) < 0.05  # CMC: U(-stdv, stdv), stdv = sqrt(3 / D)
    assert float(banks.original.abs().max()) <= math.sqrt(3 / 64)
    banks.update(torch.tensor([3]), torch.tensor([[1.0] + [0.0] * 63]), torch.tensor([[0.0, 2.0] + [0.0] * 62]), 0.5)
    assert banks.original[3, 0] == 1.0 and banks.adversarial[3, 1] == 1.0 and banks.written.sum() == 1


# --- Eq. 2-4: the NCE approximation ---------------------------------------------------------------------------

def test_contrastive_term_on_hand_computed_values() -> None:
    tau = 0.5
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    memory = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
    idx = torch.tensor([[0, 2, 2], [1, 3, 0]])  # m = 3, with a repeated draw
    loss, z = contrastive_term(anchor, positive, memory, idx, tau, None)
    # by hand: h = exp(dot / tau); N = 4, P_n = 1/4, m P_n = 3/4; Z = N * mean of the 8 sampled h values
    h = [[math.exp(0.6 / tau), math.exp(0.0), math.exp(0.8 / tau), math.exp(0.8 / tau)],
         [math.exp(1.0 / tau), math.exp(0.0), math.exp(0.0), math.exp(1.0 / tau)]]
    z_hand = 4 * sum(sum(row) for row in h) / 8
    mpn, eps = 3 / 4, 1e-7
    total = 0.0
    for row in h:
        p = [x / z_hand for x in row]
        total += math.log(p[0] / (p[0] + mpn + eps)) + sum(math.log(mpn / (q + mpn + eps)) for q in p[1:])
    assert z == pytest.approx(z_hand, rel=1e-6)
    assert float(loss) == pytest.approx(-total / 2, rel=1e-5)
    # a given Z is used as is (CMC fixes it after the first batch)
    again, z2 = contrastive_term(anchor, positive, memory, idx, tau, 2.0)
    p = [[x / 2.0 for x in row] for row in h]
    by_hand = -sum(math.log(r[0] / (r[0] + mpn + eps)) + sum(math.log(mpn / (q + mpn + eps)) for q in r[1:])
                   for r in p) / 2
    assert z2 == 2.0 and float(again) == pytest.approx(by_hand, rel=1e-5)


def test_negative_score_paths_agree_and_the_gradient_reaches_only_the_anchor() -> None:
    g = torch.Generator().manual_seed(1)
    memory = F.normalize(torch.randn(6, 5, generator=g), dim=1)
    anchor = F.normalize(torch.randn(2, 5, generator=g), dim=1).requires_grad_()
    few = torch.tensor([[0, 4], [5, 5]])  # B * m = 4 < N = 6: the drawn rows
    many = torch.tensor([[0, 4, 4, 1], [5, 5, 2, 3]])  # B * m = 8 >= N: all rows with counts
    for idx in (few, many):
        scores, weights = negative_scores(anchor, memory, idx)
        direct = torch.stack([memory[row] @ a for row, a in zip(idx, anchor)])
        summed = (weights * torch.exp(scores)).sum()
        torch.testing.assert_close(summed, torch.exp(direct).sum())
        assert float(weights.sum()) == idx.numel()
    loss, _ = contrastive_term(anchor, anchor.detach().flip(0), memory, many, 0.07, None)
    loss.backward()
    assert anchor.grad is not None and float(anchor.grad.abs().sum()) > 0


def test_nce_loss_falls_as_the_positive_score_rises() -> None:
    weights = torch.ones(1, 4)
    e_neg = torch.ones(1, 4)
    low = nce_loss(torch.tensor([1.0]), e_neg, weights, z=10.0, noise=0.1)
    high = nce_loss(torch.tensor([100.0]), e_neg, weights, z=10.0, noise=0.1)
    assert float(high) < float(low)
    assert estimate_z(torch.tensor([2.0]), torch.tensor([[4.0, 0.0]]), torch.tensor([[2.0, 0.0]]), 10) == \
        pytest.approx(10 * (2 + 8) / 3)


def test_negatives_have_another_label_and_are_seeded() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    sampler = NegativeSampler(labels)
    assert sampler.fewest == 3  # class 0's anchors have 3 candidates
    anchors = torch.tensor([0, 1, 2])
    idx = sampler.sample(anchors, 200, torch.Generator().manual_seed(0))
    assert idx.shape == (3, 200)
    for anchor_label, row in zip(anchors.tolist(), idx):
        assert (labels[row] != anchor_label).all()
    assert set(idx[0].tolist()) == {3, 4, 5} and set(idx[2].tolist()) == {0, 1, 2, 3, 4}
    assert torch.equal(idx, sampler.sample(anchors, 200, torch.Generator().manual_seed(0)))


# --- CARL on the tiny CNN --------------------------------------------------------------------------------------

def batches(train_set, batch_size: int = 8):
    order = list(range(len(train_set)))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def gradients(defense, batch, context) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    defense.model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout masks for every defense compared
    metrics = defense.training_step(batch, context)
    return {n: p.grad.clone() for n, p in defense.model.named_parameters() if p.grad is not None}, metrics


def carl(**settings) -> CARL:
    return CARL(CARLConfig(perturbation=PERTURBATION, **settings), tiny_cnn())


def test_carl_is_freelb_before_the_fill_epoch_and_while_filling() -> None:
    train_set = synthetic(16)
    reference = FreeLB(FreeLBConfig(perturbation=PERTURBATION), tiny_cnn())
    defense = carl(start_step=100, negatives=4)
    context = context_for(train_set)
    batch = make_batch(defense.model, train_set[:8], CPU, list(range(8)))
    for step, filling in ((0, False), (97, True)):  # fill window: steps 98 (= 100 - 2 steps/epoch) .. 99
        context.global_step = step + (1 if filling else 0)
        got, metrics = gradients(defense, batch, context)
        want, _ = gradients(reference, batch, context)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
        assert metrics["auxiliary"] == 0.0
        assert (defense.banks is not None) == filling
    assert defense.banks is not None and defense.banks.written.sum() == 8 and float(defense.banks.z[0]) < 0


@pytest.mark.parametrize("negatives", [4, 1])  # B * m >= N: all rows with counts; B * m < N: the drawn rows
def test_carl_switches_l_d_on_at_the_start_step(negatives: int) -> None:
    train_set = synthetic(16)
    defense = carl(start_step=2, negatives=negatives)
    context = context_for(train_set)
    optimizer = torch.optim.Adam(defense.model.parameters(), lr=1e-2)
    reference = FreeLB(FreeLBConfig(perturbation=PERTURBATION), tiny_cnn())
    seen = []
    for epoch in range(2):
        for idx in batches(train_set):
            batch = make_batch(defense.model, [train_set[i] for i in idx], CPU, idx)
            reference.model.load_state_dict(defense.model.state_dict())
            want, _ = gradients(reference, batch, context)
            got, metrics = gradients(defense, batch, context)
            seen.append((context.global_step, metrics["auxiliary"]))
            same = all(torch.equal(got[n], want[n]) for n in want)
            assert same == (context.global_step < 2)
            # L_D reads the pooled features only and the ascent follows L_C alone: the classifier's gradient is FreeLB's
            torch.testing.assert_close(got["classifier.weight"], want["classifier.weight"], rtol=0, atol=0)
            optimizer.step()
            if context.global_step == 2:
                assert defense.banks is not None
                z = defense.banks.z.clone()
            context.global_step += 1
        if epoch == 0:  # the fill epoch (steps 0-1) wrote every row before L_D starts
            assert defense.banks is not None and bool(defense.banks.written.all())
            assert float(defense.banks.z[0]) < 0
    assert [s for s, ld in seen if ld == 0.0] == [0, 1] and all(ld > 0 for s, ld in seen if s >= 2)
    assert defense.banks is not None and float(defense.banks.z[0]) > 0 and float(defense.banks.z[1]) > 0
    assert torch.equal(defense.banks.z, z)  # Z is estimated on the first L_D batch, then fixed (CMC)


def test_carl_clamps_m_and_trains_without_saving_the_banks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logged: dict[str, float] = {}
    defense = carl(start_step=0, negatives=1000)
    context = context_for(synthetic(16), log_metric=lambda name, value, step: logged.setdefault(name, value))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, optimizer="adam", schedule="constant", max_grad_norm=1.0)
    with caplog.at_level(logging.WARNING, logger="defenses.carl_rar"):
        train(defense, context, cfg)
    assert defense.m == 8 and logged["carl.negatives"] == 8.0  # 8 examples of the other label
    assert "using m = 8" in caplog.text
    assert logged["carl.contrastive"] > 0 and logged["carl.z_adv"] > 0
    extras = checked_extra_modules(defense)
    assert list(extras) == ["memory_banks"] and extra_param_groups(defense.model, extras) == []
    assert len(context.optimizer.param_groups) == 1
    assert not any("original" in k or "adversarial" in k for k in defense.model.state_dict())


def test_carl_needs_two_labels_and_example_indices() -> None:
    one_label = [dataclasses.replace(ex, label=0) for ex in synthetic(8)]
    defense = carl(start_step=0)
    batch = make_batch(defense.model, one_label, CPU, list(range(8)))
    with pytest.raises(SuiteError, match="same label"):
        defense.training_step(batch, context_for(one_label))
    batch.pop("example_index")
    with pytest.raises(SuiteError, match="example_index"):
        carl(start_step=0).training_step(batch, context_for(synthetic(8)))


@pytest.mark.parametrize("name, settings, fragment", [
    ("carl", {"negatives": 0}, "negatives"), ("carl", {"start_step": -1}, "start_step"),
    ("carl", {"temperature": 0.0}, "temperature"), ("carl", {"momentum": 1.0}, "momentum"),
    ("carl", {"perturbation": {"steps": 0}}, "perturbation.steps"), ("rar", {"weight": -0.1}, "weight"),
])
def test_bad_settings_are_one_line_errors(name: str, settings: dict, fragment: str) -> None:
    with pytest.raises(SuiteError, match=fragment):
        from_mapping(DEFENSES.get(name).Config, settings, f"defenses.{name}")


def test_defaults_are_table_1_sst2_and_section_4_3() -> None:
    c, r = CARLConfig(), RARConfig()
    assert c.perturbation == r.perturbation == PERTURBATION
    assert (c.negatives, c.start_step, c.temperature, c.momentum, r.weight) == (16000, 6315, 0.07, 0.5, 0.1)


# --- RAR ------------------------------------------------------------------------------------------------------

def test_reconstructor_is_tied_to_the_input_embeddings() -> None:
    defense = RAR(RARConfig(perturbation=PERTURBATION), tiny_cnn())
    head = defense.ensure_reconstructor(context_for([]))
    embedding = defense.model.embedding.weight
    assert defense.output_weight().data_ptr() == embedding.data_ptr()
    assert {id(p) for p in head.parameters()}.isdisjoint({id(p) for p in defense.model.parameters()})
    assert all(p.data_ptr() != embedding.data_ptr() for p in head.parameters())
    assert checked_extra_modules(defense) == {"reconstructor": head}
    assert (head.dense.in_features, head.dense.out_features, head.bias.shape[0]) == (8, 8, embedding.shape[0])
    states = torch.randn(5, 8)
    logits = head(states, defense.output_weight())
    hidden = F.layer_norm(F.gelu(states @ head.dense.weight.T + head.dense.bias), (8,), eps=1e-12)
    torch.testing.assert_close(logits, hidden @ embedding.T + head.bias)
    logits.sum().backward()
    assert embedding.grad is not None and float(embedding.grad.abs().sum()) > 0


def test_rar_ascends_l_c_only_and_reconstructs_into_the_encoder() -> None:
    train_set = synthetic(8)
    context = context_for(train_set)
    reference = FreeLB(FreeLBConfig(perturbation=PERTURBATION), tiny_cnn())
    batch = make_batch(reference.model, train_set, CPU, list(range(8)))
    want, _ = gradients(reference, batch, context)
    off, _ = gradients(RAR(RARConfig(perturbation=PERTURBATION, weight=0.0), tiny_cnn()), batch, context)
    defense = RAR(RARConfig(perturbation=PERTURBATION), tiny_cnn())
    got, metrics = gradients(defense, batch, context)
    for name in want:
        torch.testing.assert_close(off[name], want[name], rtol=0, atol=0)
    torch.testing.assert_close(got["classifier.weight"], want["classifier.weight"], rtol=0, atol=0)
    assert not torch.equal(got["convs.0.weight"], want["convs.0.weight"])
    assert not torch.equal(got["embedding.weight"], want["embedding.weight"])
    assert metrics["auxiliary"] > 0 and metrics["loss"] == pytest.approx(metrics["ce"] + metrics["auxiliary"])
    assert defense.reconstructor is not None and defense.reconstructor.dense.weight.grad is not None


def test_rar_trains_its_reconstructor_outside_the_checkpoint() -> None:
    defense = RAR(RARConfig(perturbation=PERTURBATION), tiny_cnn())
    context = context_for(synthetic(16))
    train(defense, context, TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="adam", schedule="constant"))
    groups = context.optimizer.param_groups
    assert [g["name"] for g in groups] == ["model", "reconstructor"]
    assert sum(p.numel() for p in groups[1]["params"]) == 8 * 8 + 8 + 2 * 8 + defense.model.embedding.num_embeddings
    assert defense.reconstructor is not None and not torch.equal(defense.reconstructor.bias,
                                                                 torch.zeros_like(defense.reconstructor.bias))
    assert not any("reconstructor" in k or k == "bias" for k in defense.model.state_dict())


def test_word_model_token_states_are_per_token() -> None:
    model = tiny_cnn().eval()
    batch = make_batch(model, synthetic(3), CPU)
    embeds = model.embed(batch)
    logits, states = token_forward(model, embeds, batch)
    torch.testing.assert_close(logits, model.forward_embeddings(embeds, batch).logits)
    assert states.shape == (3, embeds.shape[1], 8)
    conv = model.convs[1]  # width 3: token j sees tokens j-1, j, j+1
    window = embeds[:, 1:4].transpose(1, 2)
    torch.testing.assert_close(states[:, 2, 4:], torch.relu(conv(window)).squeeze(-1))
    torch.manual_seed(0)
    lstm = LSTMClassifier(Vocabulary.build(POSITIVE + NEGATIVE + FILLER, 0), 2, embedding_dim=8, max_length=8,
                          hidden_size=6).eval()
    batch = make_batch(lstm, synthetic(3), CPU)
    embeds = lstm.embed(batch)
    _, states = token_forward(lstm, embeds, batch)
    last = batch["attention_mask"].sum(dim=1) - 1
    features = lstm.forward_embeddings(embeds, batch, return_features=True).features
    torch.testing.assert_close(states[torch.arange(3), last], features)  # the last real token's state is h_n


# --- transformers: tiny BERT / ALBERT steps, albert-base-v2 parameter counts (Table 7) --------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    transformers = pytest.importorskip("transformers")
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    try:
        return transformers.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    except Exception as exc:  # pragma: no cover - only without the tokenizers backend
        pytest.skip(f"cannot build a fast BERT tokenizer offline: {exc}")


def hf_model(kind: str, tokenizer, **sizes):
    import transformers

    from suite.models.transformer import HFClassifier

    torch.manual_seed(0)
    if kind == "albert":
        config = transformers.AlbertConfig(num_labels=2, **sizes)
        return HFClassifier(transformers.AlbertForSequenceClassification(config), tokenizer, 16, "albert", "config")
    config = transformers.BertConfig(num_labels=2, **sizes)
    return HFClassifier(transformers.BertForSequenceClassification(config), tokenizer, 16, "tiny-bert", "config")


TINY = {"bert": dict(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=32),
        "albert": dict(vocab_size=len(VOCAB), embedding_size=4, hidden_size=8, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)}


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_a_step_of_each_defense_on_a_tiny_transformer(kind: str, tokenizer) -> None:
    train_set = synthetic(8)
    model = hf_model(kind, tokenizer, **TINY[kind]).eval()
    batch = make_batch(model, train_set, CPU, list(range(8)))
    embeds = model.embed(batch)
    logits, states = token_forward(model, embeds, batch)
    torch.testing.assert_close(logits, model.forward_embeddings(embeds, batch).logits)
    assert states.shape == (*batch["input_ids"].shape, 8)
    for defense in (CARL(CARLConfig(negatives=3, start_step=0), hf_model(kind, tokenizer, **TINY[kind])),
                    RAR(RARConfig(), hf_model(kind, tokenizer, **TINY[kind]))):
        context = context_for(train_set)
        defense.on_train_start(context)
        metrics = defense.training_step(batch, context)
        assert math.isfinite(metrics["loss"]) and metrics["auxiliary"] > 0
        assert all(p.grad is not None for p in defense.model.hf_model.base_model.encoder.parameters())
    head = defense.reconstructor
    embedding_size = TINY[kind].get("embedding_size", 8)
    assert head is not None and (head.dense.in_features, head.dense.out_features) == (8, embedding_size)
    assert defense.output_weight().data_ptr() == defense.model.hf_model.get_input_embeddings().weight.data_ptr()


def test_albert_base_v2_parameter_counts_match_table_7(tokenizer) -> None:
    sizes = dict(vocab_size=30000, embedding_size=128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072)  # albert-base-v2's config
    model = hf_model("albert", tokenizer, **sizes)
    own = sum(p.numel() for p in model.parameters())
    assert own == 11_685_122  # ALBERT / FreeLB / CARL: the suite's HFClassifier adds nothing to the HF model
    defense = CARL(CARLConfig(), model)
    assert sum(p.numel() for m in defense.extra_modules().values() for p in m.parameters()) == 0
    rar = RAR(RARConfig(), model)
    rar.on_train_start(context_for([]))
    head = checked_extra_modules(rar)["reconstructor"]
    added = sum(p.numel() for p in head.parameters())
    assert added == 768 * 128 + 128 + 2 * 128 + 30000 == 128_688  # dense + LayerNorm(128) + vocabulary bias
    assert own + added == 11_813_810
    assert isinstance(head, Reconstructor)
