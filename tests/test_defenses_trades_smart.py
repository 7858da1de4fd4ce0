"""TRADES and SMART: the divergences, the inner maximisation, the objectives on a tiny model,
SMART's momentum teacher, config validation, and one smoke cell each through the CLI."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import DEFENSES, TrainingContext
from defenses.perturbation import PerturbationConfig, per_example_norm
from defenses.smart import Smart, SmartConfig, symmetric_kl
from defenses.trades import SharedDropout, Trades, TradesConfig, ascend_divergence, kl_divergence
from suite.run.config import TrainConfig, from_mapping
from suite.core.errors import SuiteError
from suite.models.base import Batch, ModelOutput, TextClassifier
from suite.run.training import build_optimizer


class TinyClassifier(TextClassifier):
    """Embedding -> tanh layer per token -> mean over all positions -> dropout -> linear.

    Like the CNN, padding positions reach the output, so perturbing them would matter."""

    backbone_name = "tiny"

    def __init__(self, vocab: int = 20, dim: int = 6, hidden: int = 8, num_labels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_labels = num_labels
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.hidden = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch["input_ids"])

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        pooled = torch.tanh(self.hidden(embeds)).mean(1)
        logits = self.classifier(self.dropout(pooled))
        return ModelOutput(logits, pooled if return_features else None)


def _model(dropout: float = 0.0, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier(dropout=dropout)


def _batch(seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 20, (4, 7), generator=g)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1]),
            "example_index": torch.arange(4)}


def _context(seed: int = 0, step: int = 0) -> TrainingContext:
    return TrainingContext(train=[], validation=[], device=torch.device("cpu"), seed=seed, global_step=step)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- divergences ------------------------------------------------------------------------------------------

def test_kl_divergence_matches_torch_distributions_is_nonnegative_and_zero_on_equal_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(16, 5, generator=g) * 3, torch.randn(16, 5, generator=g) * 3
    reference = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                                  torch.distributions.Categorical(logits=q))
    torch.testing.assert_close(kl_divergence(p, q), reference)
    assert (kl_divergence(p, q) > 0).all()
    assert not torch.allclose(kl_divergence(p, q), kl_divergence(q, p))  # KL itself is asymmetric
    assert torch.equal(kl_divergence(p, p), torch.zeros(16))
    torch.testing.assert_close(kl_divergence(p, p + 7.0), torch.zeros(16), rtol=0, atol=1e-6)  # shift-invariant


def test_symmetric_kl_is_symmetric_zero_on_equal_and_the_sum_of_both_kls() -> None:
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(16, 4, generator=g) * 2, torch.randn(16, 4, generator=g) * 2
    assert torch.equal(symmetric_kl(p, q), symmetric_kl(q, p))
    assert torch.equal(symmetric_kl(p, p), torch.zeros(16))
    cat = torch.distributions.Categorical
    expected = (torch.distributions.kl_divergence(cat(logits=p), cat(logits=q))
                + torch.distributions.kl_divergence(cat(logits=q), cat(logits=p)))
    torch.testing.assert_close(symmetric_kl(p, q), expected)
    assert (symmetric_kl(p, q) > 0).all()


# --- the inner maximisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_ascent_stays_in_the_epsilon_ball_and_off_padding(norm: str) -> None:
    model, batch = _model(), _batch()
    embeds = model.embed(batch)
    target = model.forward_embeddings(embeds, batch).logits
    epsilon = 0.3
    for steps, step_size in ((1, 10.0), (4, 0.5), (3, 1e-3)):
        settings = PerturbationConfig(steps=steps, step_size=step_size, init_magnitude=0.05, max_norm=epsilon,
                                      norm=norm)
        delta = ascend_divergence(model, embeds, batch, target, kl_divergence, settings,
                                  generator=torch.Generator().manual_seed(3))
        size = per_example_norm(delta).flatten() if norm == "l2" else delta.flatten(1).abs().amax(1)
        assert (size <= epsilon * (1 + 1e-5)).all(), (steps, step_size, size)
        assert torch.equal(delta[1, 5:], torch.zeros_like(delta[1, 5:]))
        assert torch.equal(delta[3, 3:], torch.zeros_like(delta[3, 3:]))
        if step_size == 10.0:  # a huge step lands on the boundary
            torch.testing.assert_close(size, torch.full_like(size, epsilon))
    assert all(p.grad is None for p in model.parameters()), "the ascent must not touch parameter gradients"


def test_ascent_increases_the_kl_beyond_its_start_and_beyond_a_random_direction() -> None:
    model, batch = _model(seed=2), _batch(seed=5)
    embeds = model.embed(batch).detach()
    target = model.forward_embeddings(embeds, batch).logits.detach()

    def kl_at(delta: torch.Tensor) -> torch.Tensor:
        return kl_divergence(target, model.forward_embeddings(embeds + delta, batch).logits).detach()

    settings = dict(step_size=0.1, max_norm=0.5, init_magnitude=0.01, norm="l2")
    start = ascend_divergence(model, embeds, batch, target, kl_divergence, PerturbationConfig(steps=0, **settings),
                              generator=torch.Generator().manual_seed(4))
    adv = ascend_divergence(model, embeds, batch, target, kl_divergence, PerturbationConfig(steps=5, **settings),
                            generator=torch.Generator().manual_seed(4))
    assert (kl_at(adv) > kl_at(start)).all()
    # away from delta = 0 (where the KL is ~quadratic, so even descent would overshoot upwards)
    # each small step raises it
    far = dict(step_size=0.02, max_norm=10.0, init_magnitude=0.3, norm="l2")
    path = [kl_at(ascend_divergence(model, embeds, batch, target, kl_divergence, PerturbationConfig(steps=k, **far),
                                    generator=torch.Generator().manual_seed(6))) for k in range(4)]
    assert all((later > earlier).all() for earlier, later in zip(path, path[1:])), path
    mask = batch["attention_mask"].unsqueeze(-1).float()
    noise = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(9)) * mask
    random = noise / per_example_norm(noise) * per_example_norm(adv)  # same size per example
    assert (kl_at(adv) > kl_at(random)).all()


# --- TRADES ------------------------------------------------------------------------------------------------

def test_trades_with_beta_zero_is_plain_cross_entropy_in_value_and_gradient() -> None:
    model, batch = _model(), _batch()
    defense = Trades(TradesConfig(beta=0.0), model)
    loss = defense.loss(batch, _context())
    loss.backward()
    trades_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    ce = F.cross_entropy(model(batch).logits, batch["labels"])
    ce.backward()
    assert float(loss.detach()) == float(ce.detach())
    ce_grads = _grads(model)
    assert trades_grads.keys() == ce_grads.keys()
    for name in ce_grads:
        torch.testing.assert_close(trades_grads[name], ce_grads[name], rtol=0, atol=1e-7)
    with_kl = Trades(TradesConfig(beta=1.0), model).loss(batch, _context())
    assert float(with_kl.detach()) > float(ce.detach()) + 1e-6  # the KL term is really there when beta > 0


def test_trades_kl_term_is_zero_at_zero_delta_even_with_dropout_in_training_mode() -> None:
    model, batch = _model(dropout=0.5), _batch()
    model.train()
    defense = Trades(from_mapping(TradesConfig, {"beta": 1.0, "perturbation": {"steps": 0, "init_magnitude": 0.0}},
                                  "test"), model)
    torch.manual_seed(11)
    loss = defense.loss(batch, _context())
    torch.manual_seed(11)
    ce = F.cross_entropy(model(batch).logits, batch["labels"])  # the same dropout masks
    assert loss.item() == ce.item()
    assert defense._sums["kl"] == 0.0


def test_trades_loss_is_ce_plus_beta_times_kl_at_the_ascent_delta() -> None:
    model, batch = _model(), _batch()
    cfg = from_mapping(TradesConfig, {"beta": 0.5, "perturbation": {"steps": 3, "step_size": 0.2, "max_norm": 0.4}},
                       "test")
    defense = Trades(cfg, model)
    context = _context(seed=3, step=7)
    loss = defense.loss(batch, context)
    embeds = model.embed(batch)
    clean = model.forward_embeddings(embeds, batch).logits
    delta = defense.perturbation(batch, _context(seed=3, step=7), embeds, clean)  # same seed and step
    kl = kl_divergence(clean, model.forward_embeddings(embeds + delta, batch).logits).mean()
    assert kl.item() > 0
    expected = F.cross_entropy(clean, batch["labels"]) + 0.5 * kl
    torch.testing.assert_close(loss, expected)
    # the gradient flows through both the clean and the adversarial branch (TRADES's code)
    params = list(model.parameters())
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want)
    other_step = defense.perturbation(batch, _context(seed=3, step=8), embeds, clean)
    assert not torch.equal(delta, other_step)  # the random start depends on the step


# --- SMART ------------------------------------------------------------------------------------------------

def test_smart_teacher_update_follows_the_momentum_formula() -> None:
    model, batch = _model(seed=4), _batch()
    beta = 0.9
    defense = Smart(SmartConfig(beta=beta), model)
    context = _context()
    defense.on_train_start(context)
    teacher = defense.teacher
    for (name, p), t in zip(model.named_parameters(), teacher.parameters()):
        assert torch.equal(p, t), f"θ̃_1 must equal θ_0 ({name})"
    optimizer = build_optimizer(model, TrainConfig(lr=0.05, optimizer="adam"))
    assert not {id(t) for t in teacher.parameters()} & {id(p) for g in optimizer.param_groups for p in g["params"]}
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        defense.training_step(batch, context)
        old_teacher = [t.detach().clone() for t in teacher.parameters()]
        optimizer.step()
        assert all(torch.equal(t, o) for t, o in zip(teacher.parameters(), old_teacher)), "optimizer moved θ̃"
        defense.after_optimizer_step(context)
        context.global_step += 1
        for t, o, p in zip(teacher.parameters(), old_teacher, model.parameters()):
            torch.testing.assert_close(t, (1 - beta) * p.detach() + beta * o, rtol=1e-6, atol=1e-8)  # to rounding
            if not torch.equal(p, o):
                assert not torch.allclose(t, beta * p.detach() + (1 - beta) * o, rtol=0, atol=1e-6)
    assert not all(torch.equal(t, p) for t, p in zip(teacher.parameters(), model.parameters()))


def test_smart_teacher_is_outside_the_model_and_its_checkpoint(tmp_path: Path) -> None:
    model = _model()
    keys = set(model.state_dict())
    defense = Smart(SmartConfig(), model)
    defense.on_train_start(_context())
    teacher = defense.teacher
    assert set(model.state_dict()) == keys
    assert all(module is not teacher for module in model.modules())
    assert not {t.data_ptr() for t in teacher.state_dict().values()} & {t.data_ptr() for t in model.state_dict().values()}
    assert not any(t.requires_grad for t in teacher.parameters())
    assert {t.device for t in teacher.parameters()} == {p.device for p in model.parameters()}
    model.save(tmp_path)
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "model.safetensors"))) == keys


def test_smart_regularisers_vanish_at_zero_delta_and_equal_teacher_even_with_dropout() -> None:
    model, batch = _model(dropout=0.5, seed=5), _batch()
    model.train()
    defense = Smart(from_mapping(SmartConfig, {"lambda_s": 3.0, "mu": 2.0,
                                               "perturbation": {"steps": 0, "init_magnitude": 0.0}}, "test"), model)
    defense.on_train_start(_context())
    torch.manual_seed(12)
    loss = defense.loss(batch, _context())
    torch.manual_seed(12)
    ce = F.cross_entropy(model(batch).logits, batch["labels"])
    assert loss.item() == ce.item()
    assert defense._sums["smoothness"] == 0.0 and defense._sums["bregman"] == 0.0
    with torch.no_grad():  # θ moves away from θ̃: the proximal term appears
        model.classifier.weight.add_(torch.randn(model.classifier.weight.shape,
                                                 generator=torch.Generator().manual_seed(2)))
    noise = SharedDropout(torch.device("cpu"))  # same masks for θ and θ̃: only the weights differ
    proximal = defense.bregman(batch, model(batch).logits, noise).mean()
    assert proximal.item() > 1e-4


def test_smart_loss_is_ce_plus_weighted_smoothness_and_bregman() -> None:
    model, batch = _model(seed=6), _batch()
    cfg = SmartConfig(lambda_s=2.0, mu=0.5, perturbation=PerturbationConfig(steps=1, step_size=0.1, init_magnitude=0.01,
                                                                            max_norm=0.05, norm="linf"))
    defense = Smart(cfg, model)
    defense.on_train_start(_context())
    with torch.no_grad():
        for p in defense.teacher.parameters():
            p.mul_(0.8)
    context = _context(seed=1, step=2)
    loss = defense.loss(batch, context)
    embeds = model.embed(batch)
    clean = model.forward_embeddings(embeds, batch).logits
    delta = defense.perturbation(batch, context, embeds, clean)
    assert float(delta.abs().max()) == pytest.approx(0.05)  # linf: one big step reaches the boundary
    smooth = symmetric_kl(model.forward_embeddings(embeds + delta, batch).logits, clean).mean()
    breg = symmetric_kl(clean, defense.teacher(batch).logits).mean()
    assert smooth.item() > 0 and breg.item() > 0
    torch.testing.assert_close(loss, F.cross_entropy(clean, batch["labels"]) + 2.0 * smooth + 0.5 * breg)
    loss.backward()
    assert all(t.grad is None for t in defense.teacher.parameters())


# --- configuration ------------------------------------------------------------------------------------------

def test_registered_with_paper_defaults() -> None:
    assert DEFENSES.get("trades") is Trades and DEFENSES.get("smart") is Smart
    t, tp = TradesConfig(), TradesConfig().perturbation
    assert (t.beta, tp.steps, tp.step_size, tp.max_norm, tp.init_magnitude, tp.norm) == (0.5, 5, 0.04, 0.2, 1e-3, "l2")
    assert math.isclose(tp.max_norm, tp.steps * tp.step_size)
    s, sp = SmartConfig(), SmartConfig().perturbation
    assert (s.lambda_s, s.mu, s.beta, sp.steps, sp.step_size, sp.max_norm, sp.init_magnitude, sp.norm) == (
        1.0, 1.0, 0.99, 1, 1e-3, 1e-5, 1e-5, "linf")


@pytest.mark.parametrize("cls, settings, message", [
    (TradesConfig, {"perturbation": {"norm": "l3"}}, "trades: perturbation.norm must be one of"),
    (TradesConfig, {"beta": -1}, "beta must be >= 0"),
    (TradesConfig, {"perturbation": {"max_norm": 0}}, "trades: perturbation.max_norm must be > 0"),
    (TradesConfig, {"perturbation": {"max_norm": None}}, "trades: perturbation.max_norm must be > 0"),
    (SmartConfig, {"beta": 1.0}, "beta .teacher momentum. must be in"),
    (SmartConfig, {"perturbation": {"steps": -1}}, "smart: perturbation.steps must be >= 0"),
    (SmartConfig, {"perturbation": {"init_magnitude": -1e-5}}, "smart: perturbation.init_magnitude must be >= 0"),
    (SmartConfig, {"mu": -0.1}, "mu must be >= 0"),
    (SmartConfig, {"perturbation": {"epsilon": 1e-5}}, r"profile\.perturbation: unknown setting 'epsilon'"),
])
def test_config_errors_are_one_clear_line(cls, settings, message) -> None:
    with pytest.raises(SuiteError, match=message):
        from_mapping(cls, settings, "profile")


def test_profile_values_from_yaml_strings() -> None:
    cfg = from_mapping(SmartConfig, {"perturbation": {"max_norm": "2e-5"}, "lambda_s": 3}, "profile")
    assert cfg.perturbation.max_norm == 2e-5 and cfg.lambda_s == 3
    assert cfg.perturbation.step_size == SmartConfig().perturbation.step_size  # the rest: SMART's defaults


# --- end to end ---------------------------------------------------------------------------------------------

def _need_pwws() -> None:
    from attacks import resources as res

    folder, why = res.wordnet_dict_dir()
    if folder is None:
        pytest.skip(f"Debian WordNet absent ({why}): run scripts/install_wordnet.sh as root")


@pytest.mark.slow
@pytest.mark.parametrize("defense, regularisers", [("trades", ("trades.kl", "trades.ce")),
                                                   ("smart", ("smart.smoothness", "smart.bregman", "smart.ce"))])
def test_smoke_cell_trains_and_is_attacked(defense: str, regularisers: tuple[str, ...], workdir: Path, finished_smoke_run,
                                           mirror: Path, resources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need_pwws()
    from suite.cli import main

    code = main(["run", "--profile", "smoke", "--defense", defense, "--dataset", "sst2_sentence",
                 "--backbone", "cnn", "--attack", "pwws"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{defense}/sst2_sentence/cnn/seed0: done" in err
    run, client = finished_smoke_run(defense)
    for name in regularisers:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], name
        assert all(math.isfinite(m.value) and m.value >= 0 for m in history), name
    if defense == "trades":  # the adversarial KL is really there
        kl = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "trades.kl"), key=lambda m: m.step)]
        assert kl[0] > 0
