"""InfoBERT and Flooding / Flooding-X: the core math on a tiny model, and one smoke cell each."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import DEFENSES, TrainingContext
from defenses.flooding import (FloodingConfig, FloodingX, FloodingXConfig, cosine_matrix, flooding,
                               gradient_accordance)
from defenses.infobert import InfoBert, InfoBertConfig, InfoNCECritic, anchored_positions, chunked_info_nce, info_nce
from defenses.perturbation import normalize_gradient, random_init, token_mask
from suite.run.config import from_mapping
from suite.data.examples import Example
from suite.core.errors import SuiteError
from suite.models.base import Batch, ModelOutput, TextClassifier


class Tiny(TextClassifier):
    """Bag of tanh-mixed embeddings: token-level mixing, masked mean pooling, linear classifier.
    Texts are whitespace-separated token ids (1 .. vocab-1); 0 is padding."""

    backbone_name = "tiny"

    def __init__(self, vocab: int = 12, dim: int = 6, num_labels: int = 2, seed: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_labels = num_labels
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_labels)

    def encode(self, texts: Sequence[tuple[str, ...]]) -> Batch:
        rows = [[int(w) for w in " ".join(t).split()] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch["input_ids"])

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        mask = batch["attention_mask"].unsqueeze(-1).to(embeds.dtype)
        pooled = (torch.tanh(self.mix(embeds)) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return ModelOutput(self.classifier(self.dropout(pooled)), pooled if return_features else None)


TEXTS = ["1 2 3 4 5 6 7 8", "2 9 4", "3 3 7 1 10", "11 5", "6 7 8 9 10 11", "4 4 2 1"]


def _batch(model: TextClassifier, texts: Sequence[str] = TEXTS, labels: Sequence[int] | None = None) -> Batch:
    batch = model.encode([(t,) for t in texts])
    batch["labels"] = torch.tensor(list(labels) if labels is not None else [i % 2 for i in range(len(texts))])
    return batch


def _context(model: TextClassifier, train: list[Example] | None = None, seed: int = 0, step: int = 0,
             log: list | None = None) -> TrainingContext:
    def log_metric(name: str, value: float, step: int) -> None:
        if log is not None:
            log.append((name, value, step))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return TrainingContext(train=train or [], validation=[], device=torch.device("cpu"), seed=seed,
                           global_step=step, optimizer=optimizer, log_metric=log_metric)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


# --- flooding ------------------------------------------------------------------------------------------------

def test_flooding_equals_ce_above_b_and_two_b_minus_ce_below_and_flips_the_gradient() -> None:
    model = Tiny()
    batch = _batch(model)
    ce = F.cross_entropy(model(batch).logits, batch["labels"])
    (ce_grad,) = torch.autograd.grad(ce, model.classifier.weight, retain_graph=True)
    value = float(ce.detach())
    below, above = value - 0.2, value + 0.2  # b under and over the current loss
    assert float(flooding(ce, below).detach()) == pytest.approx(value)
    assert float(flooding(ce, above).detach()) == pytest.approx(2 * above - value)
    (g_below,) = torch.autograd.grad(flooding(ce, below), model.classifier.weight, retain_graph=True)
    (g_above,) = torch.autograd.grad(flooding(ce, above), model.classifier.weight)
    assert torch.allclose(g_below, ce_grad)
    assert torch.allclose(g_above, -ce_grad)  # below the flood level: gradient ascent
    assert ce_grad.abs().sum() > 0


@pytest.mark.parametrize("offset, sign", [(-0.2, 1.0), (0.2, -1.0)])
def test_flooding_defense_step_descends_above_b_and_ascends_below(offset: float, sign: float) -> None:
    model = Tiny()
    batch = _batch(model)
    loss = F.cross_entropy(model(batch).logits, batch["labels"])
    loss.backward()
    reference, ce = _grads(model), float(loss.detach())
    model.zero_grad(set_to_none=True)
    defense = DEFENSES.get("flooding")(FloodingConfig(flood_level=ce + offset), model)
    metrics = defense.training_step(batch, _context(model))
    assert metrics["loss"] == pytest.approx(ce)
    assert metrics["flooded_loss"] == pytest.approx(ce if sign > 0 else 2 * (ce + offset) - ce)
    for name, grad in _grads(model).items():
        assert torch.allclose(grad, sign * reference[name], atol=1e-7), name


def test_gradient_accordance_is_one_for_identical_and_minus_one_for_opposite_sub_batches() -> None:
    g = torch.randn(50, generator=torch.Generator().manual_seed(1))
    assert gradient_accordance(cosine_matrix(torch.stack([g, g])), [0, 1]) == pytest.approx(1.0)
    assert gradient_accordance(cosine_matrix(torch.stack([g, 3 * g])), [0, 1]) == pytest.approx(1.0)
    assert gradient_accordance(cosine_matrix(torch.stack([g, -g])), [0, 1]) == pytest.approx(-1.0)
    # two sub-batches per class, agreeing within and opposed between classes
    rows = cosine_matrix(torch.stack([g, 2 * g, -g, -g]))
    assert gradient_accordance(rows, [0, 0, 1, 1], "between") == pytest.approx(-1.0)
    assert gradient_accordance(rows, [0, 0, 1, 1], "all") == pytest.approx(0.0, abs=1e-6)  # (1 + 1 - 1 - 1) / 4
    orthogonal = torch.eye(3)
    assert gradient_accordance(cosine_matrix(orthogonal), [0, 1, 2]) == pytest.approx(0.0)
    assert math.isnan(gradient_accordance(cosine_matrix(torch.stack([g])), [0]))  # no pair: never triggers


def _examples(texts: Sequence[str], labels: Sequence[int]) -> list[Example]:
    return [Example(id=f"train/{i}", texts=(t,), label=int(y)) for i, (t, y) in enumerate(zip(texts, labels))]


def test_flooding_x_measure_matches_a_manual_computation() -> None:
    model = Tiny(seed=3, dropout=0.5)  # measured without dropout: the loss landscape, not dropout noise
    labels = [0, 1, 1, 0, 1, 0]
    train = _examples(TEXTS, labels)
    defense = FloodingX(FloodingXConfig(sub_batch_size=10, sub_batches_per_class=1), model)
    accordance, loss = defense.measure(_context(model, train))
    assert model.training  # the mode is restored
    model.eval()
    per_class = []
    for label in (0, 1):
        batch = _batch(model, [t for t, y in zip(TEXTS, labels) if y == label], [label] * 3)
        grads = torch.autograd.grad(F.cross_entropy(model(batch).logits, batch["labels"]), list(model.parameters()))
        per_class.append(torch.cat([g.flatten() for g in grads]))
    expected = F.cosine_similarity(per_class[0], per_class[1], dim=0)
    assert accordance == pytest.approx(float(expected), abs=1e-5)  # one sub-batch per class: the cross pair only
    full = _batch(model, TEXTS, labels)
    assert loss == pytest.approx(F.cross_entropy(model(full).logits, full["labels"]).item(), abs=1e-6)
    assert all(p.grad is None for p in model.parameters())  # measuring leaves .grad alone


def test_flooding_x_sets_b_on_conflicting_labels_and_floods_from_then_on() -> None:
    # one input under both labels: the two class gradients are exactly opposed (cos = -1)
    model = Tiny(seed=1)
    texts = ["1 2 3"] * 6
    labels = [0, 0, 0, 1, 1, 1]
    log: list = []
    context = _context(model, _examples(texts, labels), log=log)
    never = FloodingX(FloodingXConfig(sub_batch_size=3, sub_batches_per_class=1, threshold=-1.5), model)
    never.on_epoch_end(context)
    assert never.level is None and never.history[0][1] == pytest.approx(-1.0, abs=1e-5)

    defense = FloodingX(FloodingXConfig(sub_batch_size=3, sub_batches_per_class=1), model)
    batch = _batch(model, texts, labels)
    defense.training_step(batch, context)  # before the criterion: plain cross-entropy
    plain = _grads(model)
    model.zero_grad(set_to_none=True)
    defense.on_epoch_end(context)
    ce = F.cross_entropy(model(batch).logits, batch["labels"]).item()
    assert defense.level == pytest.approx(ce, abs=1e-6)  # the training loss at that point
    logged = {name: value for name, value, _ in log}
    assert logged["flooding_x.accordance"] == pytest.approx(-1.0, abs=1e-5)
    assert logged["flooding_x.flood_level"] == defense.level
    defense.level = ce + 0.1  # b above the loss: the flooded step ascends
    defense.training_step(batch, context)
    for name, grad in _grads(model).items():
        assert torch.allclose(grad, -plain[name], atol=1e-7), name


class ScriptedFloodingX(FloodingX):
    """Flooding-X with scripted measurements: the criterion logic on its own."""

    script: list[tuple[float, float]] = [(0.4, 0.6), (0.1, 0.4), (-0.05, 0.31), (-0.5, 0.1)]

    def measure(self, context: TrainingContext) -> tuple[float, float]:
        return self.script[context.epoch]


def test_flooding_x_sets_b_once_at_the_first_non_positive_accordance() -> None:
    model = Tiny()
    log: list = []
    defense = ScriptedFloodingX(FloodingXConfig(), model)
    context = _context(model, log=log)
    levels = []
    for epoch in range(4):
        context.epoch = epoch
        defense.on_epoch_end(context)
        levels.append(defense.level)
    assert levels == [None, None, 0.31, 0.31]
    assert [(v, s) for n, v, s in log if n == "flooding_x.flood_level"] == [(0.31, 3), (0.31, 4)]
    assert [s for n, _, s in log if n == "flooding_x.accordance"] == [1, 2, 3, 4]


# --- InfoBERT: estimators -------------------------------------------------------------------------------------

def test_info_nce_is_at_most_log_n() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 32):
        for scale in (0.1, 1.0, 50.0):
            scores = torch.randn(n, n, generator=gen) * scale
            assert float(info_nce(scores)) <= math.log(n) + 1e-6
    dominant = torch.eye(16) * 100.0  # positives far above all negatives: the bound reaches log N
    assert float(info_nce(dominant)) == pytest.approx(math.log(16), abs=1e-4)
    # rows are the y_i: each positive competes with the x_j of its own row (reference InfoNCE)
    s = torch.tensor([[2.0, 0.0], [5.0, 1.0]])
    expected = (2.0 + 1.0) / 2 - (math.log(math.exp(2) + 1) + math.log(math.exp(5) + math.exp(1))) / 2 + math.log(2)
    assert float(info_nce(s)) == pytest.approx(expected)


def test_info_nce_is_higher_for_correlated_pairs_than_for_shuffled_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x + 0.1 * torch.randn(64, 4, generator=gen)
    shuffled = y[torch.randperm(64, generator=gen)]
    assert float(info_nce(y @ x.T)) > float(info_nce(shuffled @ x.T)) + 1.0  # a fixed bilinear critic

    def fitted(xs: torch.Tensor, ys: torch.Tensor) -> float:
        torch.manual_seed(0)
        critic = InfoNCECritic(4, 4, hidden=32)
        opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            (-info_nce(critic.scores(xs, ys))).backward()
            opt.step()
        with torch.no_grad():
            return float(info_nce(critic.scores(xs, ys)))

    correlated, independent = fitted(x, y), fitted(x, shuffled)
    assert correlated <= math.log(64) + 1e-6
    assert correlated > independent + 1.0


def test_critic_scores_equal_the_mlp_on_concatenated_pairs() -> None:
    torch.manual_seed(0)
    critic = InfoNCECritic(3, 5, hidden=7)
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    scores = critic.scores(x, y)
    for i in range(4):
        for j in range(4):
            direct = F.softplus(critic.second(torch.relu(critic.first(torch.cat([x[j], y[i]])))))
            assert scores[i, j].item() == pytest.approx(direct.item(), abs=1e-6)
    whole = chunked_info_nce(critic, x, y, chunk=4, generator=torch.Generator().manual_seed(0))
    assert whole.item() == pytest.approx(info_nce(scores).item(), abs=1e-6)  # one chunk: shuffling is a relabelling


def test_anchored_positions_keep_the_band_between_cl_and_ch() -> None:
    norms = torch.tensor([3.0, 9.0, 1.0, 10.0, 5.0, 2.0, 8.0, 4.0, 7.0, 6.0])
    grad = torch.zeros(2, 12, 2)
    grad[0, :10, 0] = norms  # 10 real tokens, 2 padding
    grad[0, 10:, 0] = 100.0  # large padding gradients must be ignored
    grad[1, :3, 0] = torch.tensor([1.0, 3.0, 2.0])
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[0, :10] = 1
    mask[1, :3] = 1
    rows, cols = anchored_positions(grad, mask, cl=0.5, ch=0.9)
    first = sorted(norms[cols[rows == 0]].tolist())
    assert first == [6.0, 7.0, 8.0, 9.0]  # ranks ceil(5)..ceil(9)-1: not the top 10%, not the bottom half
    assert cols[rows == 1].tolist() == [1]  # n = 3: rank 2 only (ceil(1.5) = 2 .. ceil(2.7) = 3)
    rows, _ = anchored_positions(grad, mask, cl=0.5, ch=0.5)
    assert rows.numel() == 0


def test_anchored_positions_match_the_reference_feature_ranking() -> None:
    """The reference ``feature_ranking`` per sentence (right-padded, lengths 1..12)."""
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(12, 12, 3, generator=gen)
    mask = (torch.arange(12)[None, :] < torch.arange(1, 13)[:, None]).long()
    for cl, ch in ((0.5, 0.9), (0.1, 0.7), (0.0, 1.0)):
        rows, cols = anchored_positions(grad, mask, cl, ch)
        for i in range(12):
            n = i + 1
            ind = torch.sort(torch.norm(grad[i, :n], dim=1))[1]
            expected = [ind[r].item() for r in range(math.ceil(n * cl), math.ceil(n * ch))]
            assert sorted(cols[rows == i].tolist()) == sorted(expected), (cl, ch, n)


# --- InfoBERT: the training step ------------------------------------------------------------------------------

def _manual_freelb_grads(model: Tiny, batch: Batch, cfg: InfoBertConfig, context: TrainingContext) -> dict:
    """FreeLB Alg. 1 written out: k passes of CE / k from a random start, L2-normalised ascent."""
    gen = torch.Generator().manual_seed(context.seed * 1_000_003 + context.global_step)
    with torch.no_grad():
        clean = model.embed(batch)
    mask = token_mask(batch, clean)
    p = cfg.perturbation
    delta = random_init(clean, mask, p.init_magnitude, "l2", gen)
    for _ in range(p.steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model.forward_embeddings(model.embed(batch) + delta, batch).logits, batch["labels"])
        (loss / p.steps).backward()
        delta = (delta + p.step_size * normalize_gradient(delta.grad * mask)).detach() * mask
    grads = _grads(model)
    model.zero_grad(set_to_none=True)
    return grads


def test_infobert_without_regularisers_is_freelb() -> None:
    model = Tiny()
    batch = _batch(model)
    perturbation = {"steps": 3, "step_size": 0.3, "init_magnitude": 0.5}
    cfg = from_mapping(InfoBertConfig, {"alpha": 0.0, "beta": 0.0, "perturbation": perturbation}, "test")
    context = _context(model, step=7)
    reference = _manual_freelb_grads(model, batch, cfg, context)
    defense = InfoBert(cfg, model)
    metrics = defense.training_step(batch, context)
    assert defense.extra_modules() == {} and metrics["ib_mi"] == 0.0 and metrics["af_mi"] == 0.0
    ours = _grads(model)
    model.zero_grad(set_to_none=True)
    for name in reference:
        assert torch.allclose(ours[name], reference[name], atol=1e-6), name
    # and equal to the suite's own FreeLB with the same settings
    freelb_cls = DEFENSES.get("freelb")
    freelb = freelb_cls(from_mapping(freelb_cls.Config, {"perturbation": {**perturbation, "max_norm": 0.0}}, "test"),
                        model)
    freelb.training_step(batch, context)
    for name, grad in _grads(model).items():
        assert torch.allclose(grad, reference[name], atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in reference.values())


def test_infobert_regularisers_change_the_gradient_and_their_critics_ascend() -> None:
    model = Tiny()
    batch = _batch(model)
    context = _context(model, step=2)
    plain = InfoBert(InfoBertConfig(alpha=0.0, beta=0.0), model)
    plain.training_step(batch, context)
    base = _grads(model)
    model.zero_grad(set_to_none=True)

    defense = InfoBert(InfoBertConfig(alpha=0.5, beta=0.5, critic_hidden=16, critic_lr=3e-2), model)
    defense.on_train_start(_context(model, _examples(TEXTS, [0, 1] * 3)))  # builds the critics (before any optimiser)
    critics = defense.extra_modules()
    assert set(critics) == {"ib_critic", "af_critic"} and defense.extra_module_options("ib_critic") == {"lr": 3e-2}
    critic_opt = torch.optim.AdamW([p for c in critics.values() for p in c.parameters()], lr=3e-2)  # the trainer's role
    estimates = []
    for _ in range(30):  # the model is not stepped: only the critics learn, so both bounds rise
        metrics = defense.training_step(batch, context)
        estimates.append((metrics["ib_mi"], metrics["af_mi"]))
        if len(estimates) == 1:
            regularised = _grads(model)
        critic_opt.step()
        critic_opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
    assert any(not torch.allclose(regularised[n], base[n], atol=1e-6) for n in base)
    (ib0, af0), (ib1, af1) = estimates[0], estimates[-1]
    assert ib1 > ib0 + 0.05 and af1 > af0 + 0.05
    assert ib1 <= math.log(len(TEXTS)) + 1e-6 and af1 <= math.log(len(TEXTS)) + 1e-6
    assert defense.ib_critic is not None and defense.af_critic is not None
    assert all(p.grad is None for c in (defense.ib_critic, defense.af_critic) for p in c.parameters())
    assert not any(n.startswith(("ib_critic", "af_critic")) for n in model.state_dict())  # training-only


def test_infobert_is_deterministic_and_logs_per_epoch() -> None:
    batch = _batch(Tiny())
    results = []
    for _ in range(2):
        model = Tiny()
        log: list = []
        context = _context(model, seed=5, step=3, log=log)
        defense = InfoBert(InfoBertConfig(critic_hidden=8), model)
        defense.on_epoch_start(context)
        defense.training_step(batch, context)
        defense.on_epoch_end(context)
        results.append((_grads(model), log))
    (g1, log1), (g2, log2) = results
    assert all(torch.equal(g1[n], g2[n]) for n in g1)
    assert log1 == log2
    names = {name for name, _, step in log1 if step == 1}
    assert names == {"infobert.ce", "infobert.ib_mi", "infobert.af_mi", "infobert.anchored_fraction"}
    fraction = dict((n, v) for n, v, _ in log1)["infobert.anchored_fraction"]
    assert 0.0 < fraction < 1.0


@pytest.mark.parametrize("cls, settings, message", [
    (InfoBertConfig, {"cl": 0.9, "ch": 0.5}, "need 0 <= cl <= ch <= 1"),
    (InfoBertConfig, {"perturbation": {"steps": 0}}, "infobert: perturbation.steps must be >= 1"),
    (InfoBertConfig, {"perturbation": {"norm": "l1"}}, "infobert: perturbation.norm must be one of"),
    (InfoBertConfig, {"perturbation": {"max_norm": -1.0}}, "infobert: perturbation.max_norm must be >= 0"),
    (InfoBertConfig, {"alpha": -1}, "alpha must be >= 0"),
    (FloodingConfig, {"flood_level": -0.1}, "flood_level must be >= 0"),
    (FloodingXConfig, {"class_pairs": "within"}, "class_pairs must be one of"),
    (FloodingXConfig, {"sub_batch_size": 0}, "must be >= 1"),
])
def test_config_errors_are_one_clear_line(cls, settings, message) -> None:
    with pytest.raises(SuiteError, match=message):
        from_mapping(cls, settings, "profile")


def test_yaml_strings_become_numbers() -> None:
    assert from_mapping(InfoBertConfig, {"alpha": "5e-3", "beta": "5e-2"}, "profile").beta == 5e-2


# --- end to end --------------------------------------------------------------------------------------------------

def _need_pwws() -> None:
    from attacks import resources as res

    folder, why = res.wordnet_dict_dir()
    if folder is None:
        pytest.skip(f"Debian WordNet absent ({why}): run scripts/install_wordnet.sh as root")


@pytest.mark.slow
@pytest.mark.parametrize("defense, logged", [
    ("infobert", ("infobert.ce", "infobert.ib_mi", "infobert.af_mi", "infobert.anchored_fraction")),
    ("flooding-x", ("flooding_x.accordance", "flooding_x.measured_loss")),
])
def test_smoke_cell_trains_and_is_attacked(defense: str, logged: tuple[str, ...], workdir: Path, finished_smoke_run,
                                           mirror: Path, resources: Path) -> None:
    """The CLI in a child process: TextAttack's PWWS calls nltk.download, whose print target is bound
    at import; in-process, a second cell in one pytest session would print to a closed capture."""
    _need_pwws()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-m", "suite", "run", "--profile", "smoke", "--defense", defense,
                           "--dataset", "sst2_sentence", "--backbone", "cnn", "--attack", "pwws"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{defense}/sst2_sentence/cnn/seed0: done" in done.stderr
    run, client = finished_smoke_run(defense)
    for name in logged:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], name
        assert all(math.isfinite(m.value) for m in history), name
    if defense == "flooding-x":
        accordance = [m.value for m in client.get_metric_history(run.info.run_id, "flooding_x.accordance")]
        assert all(-1.0 <= a <= 1.0 for a in accordance)
    else:  # the anchored band keeps between 0 and 100% of the tokens; InfoNCE stays below log(batch size)
        fraction = client.get_metric_history(run.info.run_id, "infobert.anchored_fraction")
        assert all(0.0 < m.value < 1.0 for m in fraction)
        for name in ("infobert.ib_mi", "infobert.af_mi"):
            assert all(m.value <= math.log(50) for m in client.get_metric_history(run.info.run_id, name))
