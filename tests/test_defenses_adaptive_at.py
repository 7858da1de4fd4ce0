"""Adaptive adversarial training (adaptive_at §4): Eq. 8/10/12 numerically, the simplex ascent on
``w``, and the composition with PGD / FreeLB / TA-VAT through the real trainer."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from defenses import DEFENSES, TrainingContext
from defenses.adaptive_at import AdaptiveAT, adaptive_loss, project_to_simplex
from defenses.embedding_at import TAVAT
from suite.run.config import TrainConfig
from suite.data.examples import Example
from suite.core.errors import SuiteError
from suite.models.base import Batch
from suite.run.training import train
from test_defenses_embedding_at import TinyClassifier, config, context, input_gradient, make, param_grads, tiny_batch

ADAPTIVE = ("pgd+adaptive", "freelb+adaptive", "tavat+adaptive")


def ce_at(model: TinyClassifier, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model.forward_embeddings(model.embed(batch) + delta, batch).logits, batch["labels"])


def prefix(trajectory, t: int) -> torch.Tensor:
    """x_t - x = delta_0 + delta_1 + ... + delta_t."""
    return trajectory.init + sum((trajectory.increments[i] for i in range(t)), torch.zeros_like(trajectory.init))


# --- the projection onto the simplex ----------------------------------------------------------------

def test_project_to_simplex_known_values_and_optimality() -> None:
    close = lambda a, b: torch.allclose(a, torch.tensor(b, dtype=a.dtype), atol=1e-12)  # noqa: E731
    assert close(project_to_simplex(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)), [1 / 3] * 3)
    assert close(project_to_simplex(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)), [1.0, 0.0, 0.0])
    assert close(project_to_simplex(torch.tensor([0.6, 0.5, -1.0], dtype=torch.float64)), [0.55, 0.45, 0.0])
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(5, generator=generator, dtype=torch.float64) * 3
        p = project_to_simplex(v)
        assert torch.all(p >= 0) and float(p.sum()) == pytest.approx(1.0, abs=1e-12)
        assert torch.allclose(project_to_simplex(p), p, atol=1e-12)  # points of the simplex stay put
        others = torch.distributions.Dirichlet(torch.ones(5, dtype=torch.float64)).sample((200,))
        assert float((v - p).norm()) <= float((v - others).norm(dim=1).min()) + 1e-12  # the nearest point


# --- Eq. 8 / 10 / 12 ---------------------------------------------------------------------------------

def test_first_order_decomposition_of_eq8_has_quadratic_error() -> None:
    """L(x_0 + sum delta_i) ~ L(x_0) + sum_i grad L(x_{i-1}) . delta_i, error O(alpha^2) (Fig. 4)."""
    batch = tiny_batch()
    errors, zeroth = [], []
    for alpha in (0.08, 0.04, 0.02):
        defense, model = make("pgd", steps=4, step_size=alpha, init_magnitude=0.1, max_norm=0.0)
        trajectory = defense.ascend(batch, context())
        with torch.no_grad():
            exact = float(ce_at(model, batch, trajectory.total))
            start = float(ce_at(model, batch, trajectory.init))
        approx = start + sum(float((input_gradient(model, batch, prefix(trajectory, i)) * inc).sum())
                             for i, inc in enumerate(trajectory.increments))
        errors.append(abs(exact - approx))
        zeroth.append(abs(exact - start))
    for coarse, fine in zip(errors, errors[1:]):
        assert 0.15 < fine / coarse < 0.35, errors  # halving alpha quarters the error
    for coarse, fine in zip(zeroth, zeroth[1:]):
        assert 0.4 < fine / coarse < 0.6, zeroth  # while the first-order terms themselves are O(alpha)
    assert errors[-1] < 0.05 * zeroth[-1]


def test_freelb_objective_is_adaptive_with_beta_k_plus_1_over_2_to_first_order() -> None:
    """Eq. 9-10: (1/k) sum_t L(x_0 + r^t) ~ J_hat(w_i = (k-i+1)/k/beta, beta = (k+1)/2)."""
    batch, k = tiny_batch(), 4
    beta = DEFENSES.get("freelb+adaptive")(config("freelb+adaptive", steps=k), TinyClassifier()).beta
    assert beta == (k + 1) / 2
    weights = torch.tensor([(k - i + 1) / k / beta for i in range(1, k + 1)], dtype=torch.float64)
    assert float(weights.sum()) == pytest.approx(1.0)
    gaps, pgd_gaps = [], []
    for alpha in (0.04, 0.02):
        defense, model = make("freelb", steps=k, step_size=alpha, init_magnitude=0.1)
        trajectory = defense.ascend(batch, context())
        with torch.no_grad():
            freelb = sum(float(ce_at(model, batch, prefix(trajectory, t))) for t in range(1, k + 1)) / k
            gaps.append(abs(freelb - float(adaptive_loss(model, batch, trajectory, weights, beta))))
            uniform = torch.full((k,), 1 / k, dtype=torch.float64)
            pgd_gaps.append(abs(freelb - float(adaptive_loss(model, batch, trajectory, uniform, float(k)))))
    assert 0.15 < gaps[1] / gaps[0] < 0.35 and 0.4 < pgd_gaps[1] / pgd_gaps[0] < 0.6
    assert gaps[1] < 0.1 * pgd_gaps[1]  # PGD's weighting is not FreeLB's


def test_adaptive_loss_is_eq12() -> None:
    defense, model = make("pgd", steps=3, step_size=0.2)
    batch = tiny_batch()
    trajectory = defense.ascend(batch, context())
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    by_hand = trajectory.init + 2.5 * sum(float(wi) * d for wi, d in zip(w, trajectory.increments))
    assert float(adaptive_loss(model, batch, trajectory, w, 2.5)) == pytest.approx(float(ce_at(model, batch, by_hand)))


# --- the defenses -------------------------------------------------------------------------------------

def test_uniform_weights_with_beta_k_reproduce_pgd() -> None:
    """beta * w_i = 1 is PGD (§4.2): same loss and parameter gradient at the same deltas."""
    settings = {"steps": 4, "step_size": 0.3, "init_magnitude": 0.2, "max_norm": 0.5}
    pgd, pgd_model = make("pgd", **settings)
    adaptive, adaptive_model = make("pgd+adaptive", **settings)
    assert adaptive.beta == 4 and torch.allclose(adaptive.weights, torch.full((4,), 0.25, dtype=torch.float64))
    batch = tiny_batch()
    expected = pgd.training_step(batch, context(seed=3, step=9))
    got = adaptive.training_step(batch, context(seed=3, step=9))
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    for a, b in zip(param_grads(adaptive_model), param_grads(pgd_model)):
        assert torch.allclose(a, b, atol=1e-6)
    assert adaptive.weights.grad is None, "w must not be a parameter of the model"


@pytest.mark.parametrize("name,beta", [("pgd+adaptive", 5.0), ("freelb+adaptive", 3.0), ("tavat+adaptive", 5.0)])
def test_default_beta_and_paper_step_settings(name: str, beta: float) -> None:
    defense = DEFENSES.get(name)(DEFENSES.get(name).Config(), TinyClassifier())
    assert isinstance(defense, AdaptiveAT)
    perturbation = defense.config.perturbation
    assert (perturbation.steps, perturbation.step_size) == (5, 0.04)  # adaptive_at §5.3, Table 10
    assert defense.beta == beta
    assert DEFENSES.get(name)(DEFENSES.get(name).Config(beta=1.5), TinyClassifier()).beta == 1.5


@pytest.mark.parametrize("name", ADAPTIVE)
def test_weights_ascend_on_the_simplex(name: str) -> None:
    lr = 20.0
    defense, model = make(name, steps=3, step_size=0.3, weight_lr=lr)
    batch, ctx = tiny_batch(), context(step=1)
    defense.on_train_start(ctx)
    before = defense.weights.clone()
    # dJ/dw by hand at the perturbations the step will use (same seed and step; TA-VAT: same vocabulary)
    saved = None
    if isinstance(defense, TAVAT):  # ascend() updates TA-VAT's vocabulary: restore it for the real step
        defense.vocabulary_rows(batch["input_ids"], 6, ctx)
        saved = defense.vocabulary.clone()
    trajectory = defense.ascend(batch, ctx)
    if saved is not None:
        defense.vocabulary = saved
    w = before.clone().requires_grad_()
    objective = adaptive_loss(model, batch, trajectory, w, defense.beta)
    (grad,) = torch.autograd.grad(objective, w)
    defense.training_step(batch, ctx)
    defense.after_optimizer_step(ctx)  # no optimiser step: Θ unchanged, so J_hat(w) is comparable
    after = defense.weights
    assert torch.all(after >= 0) and float(after.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(after, project_to_simplex(before + lr * grad), atol=1e-6)
    assert not torch.allclose(after, before), "w should move"
    assert float((after - before) @ grad) > 0  # an ascent direction
    with torch.no_grad():
        assert float(adaptive_loss(model, batch, trajectory, after, defense.beta)) > float(objective)


def test_training_through_the_trainer_logs_w_each_epoch_and_keeps_it_out_of_the_optimiser() -> None:
    class Encoded(TinyClassifier):
        def encode(self, texts):
            ids = torch.zeros(len(texts), 4, dtype=torch.long)
            for row, (text,) in enumerate(texts):
                tok = [int(t) for t in text.split()][:4]
                ids[row, : len(tok)] = torch.tensor(tok)
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    texts = [" ".join(str(1 + (i * j) % 11) for j in range(1, 2 + i % 3)) for i in range(12)]
    data = [Example(f"t/{i}", (text,), i % 2) for i, text in enumerate(texts)]
    model = Encoded()
    cls = DEFENSES.get("freelb+adaptive")
    defense = cls(config("freelb+adaptive", steps=3, step_size=0.2, weight_lr=5.0), model)
    logged: list[tuple[str, float, int]] = []
    ctx = TrainingContext(train=data, validation=data[:4], device=torch.device("cpu"), seed=0,
                          log_metric=lambda name, value, step: logged.append((name, value, step)))
    train(defense, ctx, TrainConfig(epochs=2, batch_size=4, lr=1e-2, optimizer="adam", schedule="constant"))
    assert all(id(p) != id(defense.weights) for p in ctx.optimizer.param_groups[0]["params"])
    by_epoch = {step: [v for n, v, s in logged if s == step] for step in (1, 2)}
    assert sorted({n for n, _, _ in logged}) == ["adaptive.w_1", "adaptive.w_2", "adaptive.w_3"]
    for step, values in by_epoch.items():
        assert len(values) == 3 and sum(values) == pytest.approx(1.0) and min(values) >= 0
    assert by_epoch[2] == pytest.approx(defense.weights.tolist())
    assert by_epoch[2] != pytest.approx([1 / 3] * 3), "six ascent steps on w should have moved it"


@pytest.mark.parametrize("name,settings,fragment", [
    ("pgd+adaptive", {"weight_lr": -1.0}, "weight_lr"),
    ("freelb+adaptive", {"beta": 0.0}, "beta"),
    ("tavat+adaptive", {"steps": 0}, "perturbation.steps"),
    ("tavat+adaptive", {"norm": "linf"}, "perturbation.norm"),
])
def test_invalid_settings(name: str, settings: dict, fragment: str) -> None:
    with pytest.raises(SuiteError, match=fragment) as info:
        config(name, **settings)
    assert name in str(info.value)


# --- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pgd_adaptive_smoke_cell_trains_logs_w_and_is_attacked(workdir: Path, mirror: Path, resources: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    from conftest import training_runs
    from mlflow.tracking import MlflowClient

    from suite.core.records import read_run

    from suite.cli import main

    cell = ["run", "--profile", "smoke", "--defense", "pgd+adaptive", "--dataset", "sst2_sentence",
            "--backbone", "cnn", "--attack", "pwws"]
    assert main(cell) == 0
    assert "pgd+adaptive/sst2_sentence/cnn/seed0: done" in capsys.readouterr().err
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    runs = training_runs(client, "suite-smoke")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    metrics = read_run(client, run.info.run_id).metrics  # with its attacks (child runs)
    assert 0.0 <= metrics["clean_accuracy"] <= 100.0
    assert metrics["pwws.n"] == 20 and 0.0 <= metrics["pwws.aua"] <= metrics["pwws.clean_attacked_set"]
    weights = [client.get_metric_history(run.info.run_id, f"adaptive.w_{i}") for i in range(1, 6)]
    assert all(sorted(m.step for m in history) == [1, 2] for history in weights)
    for epoch in (1, 2):
        values = [next(m.value for m in history if m.step == epoch) for history in weights]
        assert sum(values) == pytest.approx(1.0, abs=1e-6) and min(values) >= 0
