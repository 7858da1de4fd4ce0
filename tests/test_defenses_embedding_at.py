"""Embedding-space adversarial training (PGD, FreeLB, FreeLB++, TA-VAT) on a tiny classifier.

The tiny model pools over *all* positions, padding included (like the word-level CNN), so its
input gradient is non-zero on padding and the tests see whether the defenses mask it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import DEFENSES, TrainingContext
from defenses.embedding_at import (PGD, TAVAT, FreeLB, FreeLBPlusPlus, step_generator, token_level_step)
from defenses.perturbation import PerturbationConfig, random_init, token_mask
from suite.core.errors import SuiteError
from suite.core.typed import from_mapping
from suite.models.base import Batch, ModelOutput, TextClassifier


class TinyClassifier(TextClassifier):
    """Embedding -> tanh layer -> mean over every position -> linear; no dropout, smooth."""

    def __init__(self, vocab: int = 12, dim: int = 6, num_labels: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_labels = num_labels
        self.embedding = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, 8)
        self.classifier = nn.Linear(8, num_labels)
        self.passes = 0

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch["input_ids"])

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        self.passes += 1
        pooled = torch.tanh(self.hidden(embeds)).mean(dim=1)
        return ModelOutput(self.classifier(pooled), pooled if return_features else None)


def tiny_batch() -> Batch:
    ids = torch.tensor([[3, 4, 5, 6, 0], [7, 3, 0, 0, 0], [8, 9, 10, 11, 4], [5, 0, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([0, 1, 1, 0]),
            "example_index": torch.arange(4)}


def context(seed: int = 0, step: int = 0) -> TrainingContext:
    return TrainingContext(train=[], validation=[], device=torch.device("cpu"), seed=seed, global_step=step)


PERTURBATION = {f.name for f in dataclasses.fields(PerturbationConfig)}


def config(name: str, **settings):
    """``name``'s config with ``settings``; PerturbationConfig's keys go to ``perturbation`` and
    are merged over the defense's own defaults (as a profile's YAML is)."""
    perturbation = {k: settings.pop(k) for k in list(settings) if k in PERTURBATION}
    return from_mapping(DEFENSES.get(name).Config, {**settings, "perturbation": perturbation}, f"defenses.{name}")


def make(name: str, **settings) -> tuple:
    model = TinyClassifier()
    return DEFENSES.get(name)(config(name, **settings), model), model


def norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def ce(model: TextClassifier, embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(model.forward_embeddings(embeds, batch).logits, batch["labels"])


def input_gradient(model: TextClassifier, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
    leaf = delta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ce(model, model.embed(batch).detach() + leaf, batch), leaf)
    return grad


def cumulative(trajectory) -> list[torch.Tensor]:
    """delta after 0, 1, ..., k steps."""
    out = [trajectory.init]
    for inc in trajectory.increments:
        out.append(out[-1] + inc)
    return out


def param_grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


# --- PGD -------------------------------------------------------------------------------------------

def test_pgd_delta_stays_in_the_ball_after_every_step_and_follows_eq5() -> None:
    eps, lr = 0.1, 0.08
    defense, model = make("pgd", steps=5, step_size=lr, init_magnitude=0.5, max_norm=eps)
    batch, mask = tiny_batch(), token_mask(tiny_batch(), torch.zeros(1))
    trajectory = defense.ascend(batch, context())
    deltas = cumulative(trajectory)
    assert len(deltas) == 6
    for delta in deltas:
        assert torch.all(norms(delta) <= eps + 1e-6)
        assert torch.all(delta * (1 - mask) == 0), "padding must not be perturbed"
    assert torch.allclose(norms(deltas[-1]), torch.full((4,), eps), atol=1e-5), "the bound should be active"
    # each step is proj(delta + lr * g / ||g||) with g the masked input gradient (computed here)
    for before, after in zip(deltas[:-1], deltas[1:]):
        g = input_gradient(model, batch, before) * mask
        stepped = before + lr * g / norms(g).view(-1, 1, 1)
        expected = stepped * torch.clamp(eps / norms(stepped), max=1.0).view(-1, 1, 1)
        assert torch.allclose(after, expected, atol=1e-6)


def test_pgd_linf_ball() -> None:
    defense, _ = make("pgd", steps=4, step_size=0.05, init_magnitude=0.3, max_norm=0.07, norm="linf")
    for delta in cumulative(defense.ascend(tiny_batch(), context())):
        assert float(delta.abs().max()) <= 0.07 + 1e-7


def test_pgd_default_bound_is_k_times_alpha_and_zero_means_unbounded() -> None:
    defense, _ = make("pgd")
    assert defense.max_norm() == pytest.approx(5 * 0.04)
    unbounded, _ = make("pgd", steps=6, step_size=0.5, init_magnitude=0.0, max_norm=0.0)
    for increment in unbounded.ascend(tiny_batch(), context()).increments:  # never shortened by a projection
        assert torch.allclose(norms(increment), torch.full((4,), 0.5), atol=1e-6)


def test_pgd_trains_on_the_final_perturbation_only() -> None:
    defense, model = make("pgd", steps=3, step_size=0.3, init_magnitude=0.1, max_norm=0.0)
    batch = tiny_batch()
    model.passes = 0
    metrics = defense.training_step(batch, context(step=7))
    assert model.passes == 4  # k ascent passes + the training pass
    grads = param_grads(model)
    model.zero_grad()
    total = defense.ascend(batch, context(step=7)).total  # same seed and step: same perturbation
    loss = ce(model, model.embed(batch) + total, batch)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-7)


def test_random_start_is_seeded_by_seed_and_step() -> None:
    defense, _ = make("pgd", init_magnitude=0.3)
    a = defense.ascend(tiny_batch(), context(seed=1, step=3)).init
    assert torch.equal(a, defense.ascend(tiny_batch(), context(seed=1, step=3)).init)
    assert not torch.equal(a, defense.ascend(tiny_batch(), context(seed=1, step=4)).init)
    assert not torch.equal(a, defense.ascend(tiny_batch(), context(seed=2, step=3)).init)


# --- FreeLB / FreeLB++ ------------------------------------------------------------------------------

def test_freelb_parameter_gradient_is_the_average_of_the_per_step_gradients() -> None:
    k, lr, mag = 3, 0.4, 0.2
    defense, model = make("freelb", steps=k, step_size=lr, init_magnitude=mag, max_norm=0.0)
    batch, ctx = tiny_batch(), context(seed=5, step=2)
    model.passes = 0
    metrics = defense.training_step(batch, ctx)
    assert model.passes == k
    got = param_grads(model)

    # an independent FreeLB loop (Zhu et al. 2020, Alg. 1) with the same random start
    model.zero_grad()
    clean = model.embed(batch).detach()
    mask = token_mask(batch, clean)
    delta = random_init(clean, mask, mag, "l2", step_generator(ctx))
    per_step, losses = [], []
    for _ in range(k):
        loss = ce(model, model.embed(batch) + delta, batch)
        per_step.append(torch.autograd.grad(loss, list(model.parameters())))
        losses.append(float(loss))
        g = input_gradient(model, batch, delta) * mask
        delta = delta + lr * g / norms(g).view(-1, 1, 1)
    for i, grad in enumerate(got):
        average = sum(step[i] for step in per_step) / k
        assert torch.allclose(grad, average, atol=1e-7)
    assert not all(torch.allclose(g, s, atol=1e-5) for g, s in zip(got, per_step[-1])), "steps must differ"
    assert metrics["loss"] == pytest.approx(sum(losses) / k, rel=1e-6)


def test_freelb_plus_plus_has_ten_steps_and_no_norm_bound() -> None:
    config = FreeLBPlusPlus.Config().perturbation
    assert config.steps == 10 and config.max_norm == 0
    assert isinstance(DEFENSES.get("freelb++")(config, TinyClassifier()), FreeLB)
    defense, model = make("freelb++", step_size=0.5, init_magnitude=0.0)
    assert defense.max_norm() <= 0
    model.passes = 0
    defense.training_step(tiny_batch(), context())
    assert model.passes == 10
    for increment in defense.ascend(tiny_batch(), context()).increments:  # never shortened by a projection
        assert torch.allclose(norms(increment), torch.full((4,), 0.5), atol=1e-6)


def test_bounded_freelb_projects() -> None:
    defense, _ = make("freelb", steps=4, step_size=0.5, init_magnitude=0.3, max_norm=0.25)
    for delta in cumulative(defense.ascend(tiny_batch(), context())):
        assert torch.all(norms(delta) <= 0.25 + 1e-6)


# --- TA-VAT ------------------------------------------------------------------------------------------

def test_token_level_step_normalises_each_token_by_its_own_gradient() -> None:
    torch.manual_seed(1)
    batch = tiny_batch()
    mask = token_mask(batch, torch.zeros(1))
    grad = torch.randn(4, 5, 6) * torch.rand(4, 5, 1) * 10  # very different token gradient norms
    stepped = token_level_step(torch.zeros(4, 5, 6), grad, 0.05, mask)
    token_norms = stepped.norm(dim=-1)
    real = mask.squeeze(-1).bool()
    assert torch.allclose(token_norms[real], torch.full_like(token_norms[real], 0.05), atol=1e-7)
    assert torch.all(token_norms[~real] == 0)
    # a sentence-level (FreeLB) step would give token norms proportional to ||g_j|| instead
    sentence = (grad * mask) / norms(grad * mask).view(-1, 1, 1) * 0.05
    assert not torch.allclose(sentence.norm(dim=-1)[real], token_norms[real], atol=1e-3)


def test_token_level_step_rescales_by_the_ratio_to_the_largest_token() -> None:
    torch.manual_seed(2)
    batch = tiny_batch()
    mask = token_mask(batch, torch.zeros(1))
    start = torch.randn(4, 5, 6) * 0.1 * mask
    grad = torch.randn(4, 5, 6)
    out = token_level_step(start, grad, 0.03, mask)
    moved = (start + 0.03 * grad / grad.norm(dim=-1, keepdim=True)) * mask
    n = moved.norm(dim=-1)  # [B, T]
    for b in range(4):
        for t in range(5):
            if mask[b, t, 0]:
                ratio = n[b, t] / n[b].max()
                assert torch.allclose(out[b, t], moved[b, t] * ratio, atol=1e-7)
                assert float(out[b, t].norm()) <= float(n[b].max()) + 1e-7  # token-level ball
            else:
                assert torch.all(out[b, t] == 0)


def test_tavat_ascent_respects_the_sentence_bound_and_updates_the_vocabulary() -> None:
    eps = 0.3
    defense, model = make("tavat", steps=3, step_size=0.2, init_magnitude=0.2, max_norm=eps)
    batch, ctx = tiny_batch(), context()
    defense.on_train_start(ctx)
    mask = token_mask(batch, torch.zeros(1))
    trajectory = defense.ascend(batch, ctx)
    for delta in cumulative(trajectory):
        assert torch.all(norms(delta) <= eps + 1e-6)
        assert torch.all(delta * (1 - mask) == 0)
    # the vocabulary covers every id seen; rows of ids in the batch changed, the others did not
    before = defense.vocabulary.clone()
    defense.training_step(batch, ctx)
    changed = (defense.vocabulary - before).abs().sum(dim=1) > 0
    present = set(batch["input_ids"][batch["attention_mask"].bool()].tolist())
    assert set(torch.nonzero(changed).flatten().tolist()) == present
    # the next start draws the token part from V: identical rows for identical ids
    state = defense.start(batch, model.embed(batch).detach(), mask, ctx)[1]
    delta_tok = state[1]
    first, second = delta_tok[0, 0], delta_tok[1, 1]  # both id 3, different sentences
    assert torch.allclose(first / first.norm(), second / second.norm(), atol=1e-6)


def test_tavat_vocabulary_accumulates_the_token_perturbation_of_the_last_pass() -> None:
    lr, mag = 0.1, 0.2
    defense, model = make("tavat", steps=2, step_size=lr, init_magnitude=mag, max_norm=0.0)
    batch, ctx = tiny_batch(), context(step=4)
    defense.on_train_start(ctx)
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    mask = token_mask(batch, torch.zeros(1))
    rows = defense.vocabulary_rows(ids, 6, ctx) * mask  # materialise V for every id of the batch
    before = defense.vocabulary.clone()
    defense.training_step(batch, ctx)
    # the same two passes by hand: start from V (scaled to init_magnitude per sentence) + FreeLB's random start
    delta_tok = rows * (mag / norms(rows).view(-1, 1, 1))
    delta_lb = random_init(model.embed(batch).detach(), mask, mag, "l2", step_generator(ctx))
    grad = input_gradient(model, batch, delta_lb + delta_tok) * mask
    last_pass = token_level_step(delta_tok, grad, lr, mask)  # the token part of pass 2
    expected = torch.zeros_like(before).index_put_((ids[real],), last_pass[real], accumulate=True)
    assert torch.allclose(defense.vocabulary - before, expected, atol=1e-6)


def test_tavat_trains_like_freelb_on_the_average_loss() -> None:
    defense, model = make("tavat", steps=2)
    model.passes = 0
    metrics = defense.training_step(tiny_batch(), context())
    assert model.passes == 2 and metrics["loss"] > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert isinstance(defense, TAVAT)


# --- configuration -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,settings,fragment", [
    ("pgd", {"steps": 0}, "perturbation.steps"),
    ("freelb", {"step_size": 0.0}, "perturbation.step_size"),
    ("freelb++", {"norm": "l1"}, "perturbation.norm"),
    ("tavat", {"max_norm": -1.0}, "perturbation.max_norm"),
    ("tavat", {"norm": "linf"}, "perturbation.norm must be l2"),
    ("pgd", {"init_magnitude": -0.1}, "perturbation.init_magnitude"),
])
def test_invalid_settings_raise_one_line_suite_errors(name: str, settings: dict, fragment: str) -> None:
    with pytest.raises(SuiteError, match=fragment) as info:
        config(name, **settings)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_paper_defaults() -> None:
    pgd, freelb = PGD.Config().perturbation, FreeLB.Config().perturbation
    assert (pgd.steps, pgd.step_size, pgd.init_magnitude, pgd.max_norm, pgd.norm) == (5, 0.04, 0.05, None, "l2")
    assert (freelb.steps, freelb.step_size, freelb.init_magnitude, freelb.max_norm) == (2, 0.03, 0.05, 0.0)
    cfg = TAVAT.Config().perturbation
    assert (cfg.steps, cfg.step_size, cfg.init_magnitude, cfg.max_norm) == (2, 0.05, 0.2, 0.5)


def test_a_partial_perturbation_keeps_the_defenses_own_defaults() -> None:
    assert config("freelb", steps=7).perturbation == dataclasses.replace(FreeLB.Config().perturbation, steps=7)
    assert config("tavat", step_size=0.1).perturbation == dataclasses.replace(TAVAT.Config().perturbation,
                                                                                step_size=0.1)


def test_pgds_unset_max_norm_is_steps_times_step_size() -> None:
    defense, _ = make("pgd", steps=4, step_size=0.05)
    assert defense.cfg.perturbation.max_norm is None and defense.max_norm() == pytest.approx(0.2)
    assert make("pgd", max_norm=0.0)[0].max_norm() == 0.0  # 0: unbounded


# --- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_freelb_smoke_cell_trains_and_is_attacked(workdir: Path, mirror: Path, resources: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    from conftest import training_runs
    from mlflow.tracking import MlflowClient

    from suite.cli import main
    from suite.core.records import read_run

    cell = ["run", "--profile", "smoke", "--defense", "freelb", "--dataset", "sst2_sentence", "--backbone", "cnn",
            "--attack", "pwws"]
    assert main(cell) == 0
    assert "freelb/sst2_sentence/cnn/seed0: done" in capsys.readouterr().err
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = training_runs(client, "suite-smoke")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    metrics = read_run(client, run.info.run_id).metrics  # with its attacks (child runs)
    assert 0.0 <= metrics["clean_accuracy"] <= 100.0
    assert metrics["mean_epoch_time_s"] > 0
    assert metrics["pwws.n"] == 20 and 0.0 <= metrics["pwws.aua"] <= metrics["pwws.clean_attacked_set"]
