"""Trainer interface v2: phases, re-sized LR schedules, extra trainable modules, wrapped models,
attacks during training (resumable), per-example losses, seeded generators, backbone builders.

The defenses here are test-only: registered in ``DEFENSES`` only while a test uses them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from defenses import DEFENSES
from defenses.base import Defense, DefenseConfig, Phase, TrainingContext
from defenses.perturbation import step_generator
from suite.core.errors import SuiteError
from suite.core.seeding import derive_seed, generator, seed_everything
from suite.data.examples import Example
from suite.models.base import Batch, ModelOutput, TextClassifier, state_sha256
from suite.models.batching import make_batch
from suite.models.loading import load_classifier
from suite.models.registry import BACKBONES, BackboneSpec, build_backbone
from suite.models.text_processing import Vocabulary
from suite.models.word_models import KimCNN
from suite.models.wrapped import WRAPPERS, WrappedClassifier, register_wrapper
from suite.run.config import TrainConfig
from suite.run.training import LinearSchedule, train

POSITIVE, NEGATIVE, FILLER = ["good", "great", "fine", "nice"], ["bad", "awful", "dull", "poor"], ["the", "movie", "plot", "a", "was"]


def synthetic(n: int, prefix: str = "train", offset: int = 0) -> list[Example]:
    """Deterministic two-class sentences: a sentiment word among filler words."""
    out = []
    for i in range(offset, offset + n):
        label = i % 2
        word = (POSITIVE if label else NEGATIVE)[(i // 2) % 4]
        words = [FILLER[(i + j) % 5] for j in range(2 + i % 3)]
        words.insert(i % len(words), word)
        out.append(Example(id=f"{prefix}/{i}", texts=(" ".join(words),), label=label))
    return out


def tiny_cnn(seed: int = 0) -> KimCNN:
    torch.manual_seed(seed)
    vocab = Vocabulary.build(POSITIVE + NEGATIVE + FILLER, 0)
    model = KimCNN(vocab, 2, embedding_dim=8, max_length=8, filter_sizes=(2, 3), num_filters=4)
    model.backbone_name = "cnn"
    return model


def context_for(train_set: list[Example], validation: list[Example] | None = None, seed: int = 0,
                **kwargs: Any) -> TrainingContext:
    return TrainingContext(train=list(train_set), validation=validation or synthetic(8, "val", 100),
                           device=torch.device("cpu"), seed=seed, **kwargs)


ADAM = TrainConfig(epochs=2, batch_size=8, lr=1e-2, optimizer="adam", schedule="constant", max_grad_norm=None)


@pytest.fixture
def registered():
    """``registered(cls, name)``: register a test-only defense for this test only."""
    added: list[str] = []

    def add(cls: type[Defense], name: str) -> type[Defense]:
        cls.name = name
        DEFENSES._entries[name] = cls
        added.append(name)
        return cls

    yield add
    for name in added:
        DEFENSES._entries.pop(name, None)


# --- a wrapped model with a gate network (a stand-in for FLAT's word masks) ------------------------------------

@register_wrapper("test-gated")
class GatedClassifier(WrappedClassifier):
    """``inner`` on gated embeddings: ``e * sigmoid(mask(e))`` per token."""

    def __init__(self, inner: TextClassifier, dim: int, seed: int = 0) -> None:
        super().__init__(inner)
        self.dim, self.seed = dim, seed
        self.mask = nn.Linear(dim, 1)
        with torch.no_grad():  # seeded by purpose: the global RNG stream is not consumed
            self.mask.weight.copy_(torch.randn(1, dim, generator=generator(seed, "test-gate")) * 0.1)
            self.mask.bias.fill_(2.0)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        return self.inner.forward_embeddings(embeds * torch.sigmoid(self.mask(embeds)), batch, return_features)

    def settings(self) -> dict[str, Any]:
        return {"dim": self.dim, "seed": self.seed}


@dataclass(frozen=True)
class GatedConfig(DefenseConfig):
    head_weight: float = 0.1


class GatedDefense(Defense):
    """Gate (inference extra module, inside the wrapper) + a training-only reconstruction head whose
    ``unused`` parameter gets a zero gradient (so its only update is the weight decay)."""

    Config = GatedConfig
    config: GatedConfig

    def prepare_model(self, model: TextClassifier) -> TextClassifier:
        dim = model.embedding.embedding_dim  # type: ignore[union-attr]
        self.head = nn.Linear(model.classifier.in_features, dim)  # type: ignore[union-attr]
        self.head.unused = nn.Parameter(torch.ones(3))
        return GatedClassifier(model, dim)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"gate": self.model.mask, "head": self.head}  # type: ignore[union-attr]

    def inference_modules(self) -> frozenset[str]:
        return frozenset({"gate"})

    def per_example_loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
        embeds = self.model.embed(batch)
        out = self.model.forward_embeddings(embeds, batch, return_features=True)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        target = (embeds * mask).sum(1) / mask.sum(1)
        reconstruction = ((self.head(out.features) - target.detach()) ** 2).mean(dim=1)
        ce = F.cross_entropy(out.logits, batch["labels"], reduction="none")
        return ce + self.config.head_weight * reconstruction + 0.0 * self.head.unused.sum()


def test_extra_modules_are_optimised_decayed_and_only_inference_ones_checkpointed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    defense = GatedDefense(GatedConfig(), tiny_cnn())
    gate0 = {k: v.clone() for k, v in defense.model.mask.state_dict().items()}
    head0 = {k: v.clone() for k, v in defense.head.state_dict().items()}
    context = context_for(synthetic(32))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, optimizer="adamw", weight_decay=0.1, schedule="constant",
                      max_grad_norm=1.0, select="last")
    train(defense, context, cfg)
    groups = context.optimizer.param_groups
    assert [g["name"] for g in groups] == ["model", "head"]  # the gate is the model's: optimised once
    assert all(g["weight_decay"] == 0.1 and g["lr"] == 1e-2 for g in groups)
    assert {id(p) for p in defense.model.mask.parameters()} <= {id(p) for p in groups[0]["params"]}
    assert any(not torch.equal(v, gate0[k]) for k, v in defense.model.mask.state_dict().items())
    assert not torch.equal(defense.head.weight, head0["weight"])
    steps = context.global_step
    assert steps == 8
    expected = head0["unused"] * (1 - 1e-2 * 0.1) ** steps  # AdamW with a zero gradient: decay only
    torch.testing.assert_close(defense.head.unused.detach(), expected, rtol=1e-6, atol=0)

    defense.model.save(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert {"mask.weight", "mask.bias"} <= keys and not any("head" in k for k in keys)
    assert any(k.startswith("inner.") for k in keys)
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["wrapper"] == "test-gated" and description["settings"] == {"dim": 8, "seed": 0}
    assert WRAPPERS.get("test-gated") is GatedClassifier
    assert description["inner"]["backbone"] == "cnn" and description["backbone"] == "cnn"
    loaded = load_classifier(tmp_path)
    assert isinstance(loaded, GatedClassifier) and isinstance(loaded.inner, KimCNN)
    torch.testing.assert_close(loaded.mask.weight, defense.model.mask.weight, rtol=0, atol=0)
    batch = make_batch(loaded, synthetic(6, "test", 200), torch.device("cpu"))
    defense.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, defense.model(batch).logits, rtol=0, atol=0)


def test_misdeclared_extra_modules_are_one_line_errors() -> None:
    class OutsideInference(GatedDefense):
        def inference_modules(self) -> frozenset[str]:
            return frozenset({"gate", "head"})  # the head is not in the model: it could not be saved

    class InsideTrainingOnly(GatedDefense):
        def inference_modules(self) -> frozenset[str]:
            return frozenset()  # the gate is in the model: it would be saved

    class Unknown(GatedDefense):
        def inference_modules(self) -> frozenset[str]:
            return frozenset({"gate", "critic"})

    for cls, fragment in ((OutsideInference, "'head' is needed at inference but is not part of the model"),
                          (InsideTrainingOnly, "training-only extra module 'gate' is part of the model"),
                          (Unknown, "names critic")):
        defense = cls(GatedConfig(), tiny_cnn())
        with pytest.raises(SuiteError, match=fragment) as info:
            train(defense, context_for(synthetic(8)), ADAM)
        assert "\n" not in str(info.value)


# --- phases ------------------------------------------------------------------------------------------------

class TwoPhases(Defense):
    """Phase 1 on the protocol split; phase 2 on a fresh model, on the protocol split plus copies."""

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.initial = state_sha256(model)
        self.seen: dict[str, Any] = {}

    def phases(self, train_cfg: Any) -> list[Phase]:
        return [Phase("first", epochs=1), Phase("second", epochs=2, data=self.second_data, fresh_model=True)]

    def second_data(self, context: TrainingContext) -> list[Example]:
        self.seen["data_saw"] = state_sha256(self.model)  # the model phase 1 trained
        self.seen["optimizer_before"] = context.optimizer
        assert context.protocol_train is not None
        return list(context.protocol_train) + [Example(f"{ex.id}/copy", ex.texts, ex.label)
                                               for ex in context.protocol_train[:8]]

    def on_phase_start(self, phase: Phase, context: TrainingContext) -> None:
        self.seen[f"{phase.name}_start"] = (state_sha256(self.model), len(context.train), context.phase_index)


def test_two_phases_with_a_fresh_model(registered) -> None:
    registered(TwoPhases, "test-two-phases")
    defense = TwoPhases(DefenseConfig(), tiny_cnn())
    protocol = synthetic(24)
    context = context_for(protocol)
    epochs: list[int] = []
    result = train(defense, context, ADAM, on_epoch=lambda e, m: epochs.append(e))
    assert result.phase == ["first", "second", "second"] and epochs == [0, 1, 2]
    assert len(result.validation_accuracy) == 3 and result.best_epoch in (1, 2)  # the final phase's best
    assert defense.seen["first_start"] == (defense.initial, 24, 0)
    assert defense.seen["data_saw"] != defense.initial  # the data hook sees the trained phase-1 model
    assert defense.seen["second_start"] == (defense.initial, 32, 1)  # fresh: the initial weights again
    assert context.optimizer is not defense.seen["optimizer_before"]  # a new optimiser per phase
    assert context.global_step == 3 + 2 * 4 and context.phase_steps == 8
    assert context.protocol_train is not None and len(context.protocol_train) == 24 and len(context.train) == 32


class SkippablePhases(Defense):
    """Phase "first" (skipped when asked), then "second" on a fresh model with its own shuffle."""

    def __init__(self, config: DefenseConfig, model: TextClassifier, skip_first: bool) -> None:
        super().__init__(config, model)
        self.skip_first, self.batches = skip_first, []

    def phases(self, train_cfg: Any) -> list[Phase]:
        return [Phase("first", epochs=2, skip=lambda context: self.skip_first),
                Phase("second", epochs=2, fresh_model=True, own_shuffle=True)]

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        self.batches.append((context.phase, batch["example_index"].tolist()))
        return super().training_step(batch, context)


def test_a_skipped_phase_runs_nothing_and_own_shuffle_keeps_later_batches() -> None:
    runs = {}
    for skip in (False, True):
        seed_everything(0)
        defense = SkippablePhases(DefenseConfig(), tiny_cnn(), skip)
        result = train(defense, context_for(synthetic(24)), ADAM)
        runs[skip] = (defense, result)
    ran, skipped = runs[False], runs[True]
    assert ran[1].phase == ["first", "first", "second", "second"] and skipped[1].phase == ["second", "second"]
    assert {p for p, _ in skipped[0].batches} == {"second"}
    # phase "second" draws the same batches whether "first" ran or not (its own seeded shuffle) ...
    assert [b for p, b in ran[0].batches if p == "second"] == [b for _, b in skipped[0].batches]
    # ... and not the shared generator's continuation
    assert [b for p, b in ran[0].batches if p == "first"][:3] != [b for _, b in skipped[0].batches][:3]

    class AllSkipped(SkippablePhases):
        def phases(self, train_cfg: Any) -> list[Phase]:
            return [Phase("only", skip=lambda context: True)]

    with pytest.raises(SuiteError, match="every phase was skipped"):
        train(AllSkipped(DefenseConfig(), tiny_cnn(), True), context_for(synthetic(8)), ADAM)


def test_default_is_one_phase_on_context_train() -> None:
    defense = Defense(DefenseConfig(), tiny_cnn())
    assert [(p.name, p.epochs, p.data, p.fresh_model) for p in defense.phases(ADAM)] == [("train", None, None, False)]
    context = context_for(synthetic(16))
    result = train(defense, context, ADAM)
    assert result.phase == ["train", "train"] and context.phase_steps == 4 and context.global_step == 4


# --- the LR schedule ---------------------------------------------------------------------------------------

class Growing(Defense):
    """Adds examples at the start of every epoch after the first; records the LR of every step."""

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.lrs: list[float] = []

    def on_epoch_start(self, context: TrainingContext) -> None:
        if context.phase_epoch > 0:
            context.train = context.train + synthetic(12 * context.phase_epoch, f"grown{context.epoch}", 300)

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        assert context.optimizer is not None
        self.lrs.append(context.optimizer.param_groups[0]["lr"])
        return super().training_step(batch, context)


LINEAR = TrainConfig(epochs=3, batch_size=8, lr=1e-2, optimizer="adamw", warmup_ratio=0.25, max_grad_norm=1.0)


def test_growing_training_set_keeps_the_lr_above_zero_until_the_last_step() -> None:
    defense = Growing(DefenseConfig(), tiny_cnn())
    context = context_for(synthetic(24))
    train(defense, context, LINEAR)
    lrs = defense.lrs
    assert len(lrs) == 3 + 5 + 8 == context.global_step  # 24, 36 and 60 examples in batches of 8
    planned_once = 3 * 3  # what a schedule sized once from the first epoch assumed
    assert len(lrs) > planned_once
    assert all(lr > 0 for lr in lrs), lrs
    warmup = int(0.25 * planned_once)
    assert lrs[:warmup] == pytest.approx([1e-2 * (s + 1) / warmup for s in range(warmup)])
    decay = lrs[warmup:]
    assert all(a > b for a, b in zip(decay, decay[1:])), decay  # strictly decreasing to the end
    assert context.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # 0 only after the last step
    assert context.phase_steps == len(lrs)


def test_a_constant_size_schedule_is_the_first_trainers_exactly() -> None:
    defense = Growing(DefenseConfig(), tiny_cnn())
    defense.on_epoch_start = lambda context: None  # type: ignore[method-assign]
    context = context_for(synthetic(24))
    train(defense, context, LINEAR)
    total, warmup = 9, 2

    def first_trainer(step: int) -> float:  # suite.run.training.build_scheduler before v2
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    assert defense.lrs == [1e-2 * first_trainer(s) for s in range(total)]  # bit for bit


def test_linear_schedule_resize_is_continuous_and_ends_at_zero() -> None:
    schedule = LinearSchedule(10, 0.2)
    before = [schedule(s) for s in range(5)]
    schedule.resize(20, at_step=5)
    after = [schedule(s) for s in range(20)]
    assert after[:5] == before
    assert after[5] == pytest.approx(LinearSchedule(10, 0.2)(5))  # no jump at the re-size
    assert all(v > 0 for v in after) and schedule(20) == 0.0
    in_warmup = LinearSchedule(10, 0.5)
    in_warmup.resize(30, at_step=2)  # during warm-up: warm-up kept, decay over the new total
    assert [in_warmup(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert in_warmup(29) > 0 and in_warmup(30) == 0.0


# --- per-example losses, generators, train_attack ----------------------------------------------------------

def test_per_example_loss_default_and_its_mean() -> None:
    model = tiny_cnn().eval()
    defense = Defense(DefenseConfig(), model)
    batch = make_batch(model, synthetic(6), torch.device("cpu"))
    context = context_for([])
    per_example = defense.per_example_loss(batch, context)
    assert per_example.shape == (6,)
    mean = F.cross_entropy(model(batch).logits, batch["labels"])
    assert torch.equal(defense.loss(batch, context), mean)  # unchanged from the first trainer, to the bit
    torch.testing.assert_close(per_example.mean(), mean)

    class Weighted(Defense):
        def per_example_loss(self, batch: Batch, context: TrainingContext) -> torch.Tensor:
            return super().per_example_loss(batch, context) * torch.arange(1.0, 7.0)

    weighted = Weighted(DefenseConfig(), model)
    torch.testing.assert_close(weighted.loss(batch, context), (per_example * torch.arange(1.0, 7.0)).mean())


def test_seeded_generators_by_purpose() -> None:
    assert derive_seed(0, "shuffle") == derive_seed(0, "shuffle") and 0 <= derive_seed(0, "shuffle") < 2**63
    seeds = {derive_seed(0, "shuffle"), derive_seed(1, "shuffle"), derive_seed(0, "mask"),
             derive_seed(0, "shuffle", 1), derive_seed(0, "shuffle", 2), derive_seed(0, "shuffle", 1, 0)}
    assert len(seeds) == 6
    draw = lambda g: torch.rand(4, generator=g).tolist()  # noqa: E731
    assert draw(generator(3, "x", 1)) == draw(generator(3, "x", 1)) != draw(generator(3, "x", 2))
    assert draw(context_for([], seed=3).generator("x", 1)) == draw(generator(3, "x", 1))
    state = torch.get_rng_state()
    generator(0, "y")
    assert torch.equal(torch.get_rng_state(), state)  # no global draw
    # the existing per-step formula is kept (numbers of every perturbation-based defense unchanged)
    ctx = context_for([], seed=5, global_step=7)
    assert draw(step_generator(ctx)) == draw(torch.Generator().manual_seed(5 * 1_000_003 + 7))


def test_train_attack_is_the_config_field() -> None:
    @dataclass(frozen=True)
    class WithAttack(DefenseConfig):
        train_attack: str = "deepwordbug"

    assert Defense(DefenseConfig(), tiny_cnn()).train_attack is None
    assert Defense(WithAttack(), tiny_cnn()).train_attack == "deepwordbug"


# --- backbone builders -------------------------------------------------------------------------------------

def test_every_registered_backbone_has_a_builder_and_a_rebuilder() -> None:
    for name, spec in BACKBONES.items():
        assert spec.builder is not None and spec.rebuilder is not None, name


def test_a_spec_builds_and_loads_through_its_callables(tmp_path: Path) -> None:
    calls: list[Any] = []

    def build(spec: BackboneSpec, splits: Any, seed: int, max_length: int | None, **options: Any):
        calls.append((seed, max_length, options))
        return tiny_cnn(seed), {"built": True}

    def rebuild(spec: BackboneSpec, desc: dict[str, Any]) -> TextClassifier:
        calls.append("rebuild")
        return KimCNN(Vocabulary(desc["vocab"]), desc["num_labels"], embedding_dim=desc["embedding_dim"],
                      max_length=desc["max_length"], filter_sizes=tuple(desc["options"]["filter_sizes"]),
                      num_filters=desc["options"]["num_filters"])

    spec = BackboneSpec("tiny-test", "word", "test", builder=build, rebuilder=rebuild)
    model, facts = spec.build(None, 3, 8, extra=1)  # type: ignore[arg-type]
    assert facts == {"built": True} and calls == [(3, 8, {"extra": 1})]
    model.save(tmp_path)
    loaded = spec.load(tmp_path)
    assert calls[-1] == "rebuild" and loaded.backbone_name == "tiny-test" and not loaded.training
    batch = make_batch(loaded, synthetic(4), torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model.eval()(batch).logits, rtol=0, atol=0)
    with pytest.raises(SuiteError, match="has no builder"):
        BackboneSpec("bare", "word", "no callables").build(None, 0)  # type: ignore[arg-type]
    with pytest.raises(SuiteError, match="has no rebuilder"):
        BackboneSpec("bare", "word", "no callables").load(tmp_path)


def test_cnn_build_backbone_is_the_spec_builder_and_loads_back(mirror: Path, resources: Path, tmp_path: Path) -> None:
    from suite.data.splits import SplitOptions, load_protocol_splits

    splits = load_protocol_splits("sst2_sentence", SplitOptions(train_limit=60, validation_limit=10, test_limit=10))
    torch.manual_seed(0)
    model, facts = build_backbone("cnn", splits, 0, None, num_filters=4)
    torch.manual_seed(0)
    again, facts_again = BACKBONES.get("cnn").build(splits, 0, None, num_filters=4)
    assert facts == facts_again and facts["embeddings"] == "glove_6B_50d"
    assert state_sha256(model) == state_sha256(again)
    model.save(tmp_path)
    loaded = load_classifier(tmp_path)
    assert isinstance(loaded, KimCNN) and state_sha256(loaded) == state_sha256(model)


# --- attacks: on a wrapped model after reload, and during training (resumable) -----------------------------

CHILD = "SUITE_TRAINER_V2_CHILD"  # set in the child process that runs one attack test


@pytest.fixture(scope="module")
def attack_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get(CHILD):  # the parent's cache: NLTK data is prepared once for both tests
        return Path(os.environ["SUITE_CACHE_DIR"])
    return tmp_path_factory.mktemp("suite-cache")


def ran_in_child(request: pytest.FixtureRequest) -> bool:
    """Run this test's body in a child pytest process; True in the parent (the child did the work).

    NLTK binds a corpus reader to the data folder it was first loaded from, process-wide, and its
    path check then refuses that folder once another test's suite cache is on ``nltk.data.path``:
    attacking here after another module's attack tests fails in-process (as the smoke-cell tests,
    which run the CLI in a child process, avoid too)."""
    name = request.node.name
    if os.environ.get(CHILD) == name:
        return False
    env = {**os.environ, CHILD: name, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{name}"],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode == 0 and " skipped" in done.stdout and " passed" not in done.stdout:
        pytest.skip(f"skipped in the child process: {done.stdout.strip().splitlines()[-1]}")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-6000:] + done.stderr[-2000:]
    return True


@pytest.fixture
def attack_env(mirror: Path, resources: Path, attack_cache: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline attack environment with a module-wide suite cache (NLTK data is copied once)."""
    import sys

    from attacks import resources as res

    needed = ["nltk_data/MANIFEST.json"]
    if not all((resources / n).is_file() for n in needed):
        pytest.skip(f"resource mirror at {resources} lacks {needed}: set SUITE_RESOURCES_DIR")
    for var in ("NLTK_DATA", "TA_CACHE_DIR", *res.PINNED_CACHES):
        monkeypatch.delenv(var, raising=False)
    if "nltk.data" in sys.modules:
        monkeypatch.setattr(sys.modules["nltk.data"], "path", list(sys.modules["nltk.data"].path))
    monkeypatch.setenv("SUITE_CACHE_DIR", str(attack_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    install = sys.modules.get("textattack.shared.utils.install")
    if install is not None:
        monkeypatch.setattr(install, "TEXTATTACK_CACHE_DIR", str(attack_cache / "textattack"))
    torch.set_num_threads(1)
    return attack_cache


def _sst2(train_limit: int = 200) -> Any:
    from suite.data.splits import SplitOptions, load_protocol_splits

    return load_protocol_splits("sst2_sentence", SplitOptions(train_limit=train_limit, validation_limit=40,
                                                              test_limit=40))


def _sst2_cnn(splits: Any, seed: int = 0) -> KimCNN:
    torch.manual_seed(seed)
    vocab = Vocabulary.build((" ".join(ex.texts) for ex in splits.train), 0)
    model = KimCNN(vocab, 2, embedding_dim=16, max_length=30, num_filters=8)
    model.backbone_name = "cnn"
    return model


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_wrapped_model_reloaded_gives_the_same_logits_and_attack_records(attack_env: Path, tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    from attacks import resources as res
    from attacks.evaluation import run_attack

    if res.wordnet_dict_dir()[0] is None:
        pytest.skip("Debian WordNet absent: run scripts/install_wordnet.sh as root")
    if ran_in_child(request):
        return
    splits = _sst2()
    seed_everything(0)
    defense = GatedDefense(GatedConfig(), _sst2_cnn(splits))
    train(defense, context_for(splits.train, splits.validation),
          TrainConfig(epochs=3, batch_size=32, lr=1e-2, optimizer="adam", schedule="constant", max_grad_norm=None))
    model = defense.model.eval()
    model.save(tmp_path / "ckpt")
    loaded = load_classifier(tmp_path / "ckpt")
    batch = make_batch(model, splits.test, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)
    kwargs = dict(seed=2024, checkpoint_sha256="e" * 64, attack_set_sha256="f" * 64)
    before = run_attack("pwws", model, splits.test[:5], cache_root=tmp_path / "cache-before", **kwargs)
    after = run_attack("pwws", loaded, splits.test[:5], cache_root=tmp_path / "cache-after", **kwargs)
    assert before.resumed == after.resumed == 0 and len(before.records) == 5
    assert _comparable(after.records) == _comparable(before.records)
    assert before.attack_hash == after.attack_hash


@dataclass(frozen=True)
class AttackingConfig(DefenseConfig):
    train_attack: str = "deepwordbug"
    attacked: int = 6


class _Killed(Exception):
    pass


class Attacking(Defense):
    """Phase 1: clean; phase 2: the protocol split plus the successful adversarial examples of the
    phase-1 model (attacked during training through ``context.attack``)."""

    Config = AttackingConfig
    config: AttackingConfig

    def __init__(self, config: DefenseConfig, model: TextClassifier, kill_after: int | None = None) -> None:
        super().__init__(config, model)
        self.kill_after = kill_after
        self.new_records: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def phases(self, train_cfg: Any) -> list[Phase]:
        return [Phase("clean", epochs=1), Phase("augmented", epochs=1, data=self.augment)]

    def _on_record(self, record: dict[str, Any]) -> None:
        self.new_records.append(record)
        if self.kill_after is not None and len(self.new_records) >= self.kill_after:
            raise _Killed  # the process dies here: the record is already in the cache

    def augment(self, context: TrainingContext) -> list[Example]:
        assert context.protocol_train is not None and self.train_attack is not None
        mode, rng = self.model.training, torch.get_rng_state()
        self.records = context.attack(context.protocol_train[:self.config.attacked], self.train_attack,
                                      on_record=self._on_record)
        assert self.model.training == mode and torch.equal(torch.get_rng_state(), rng)  # caller's state kept
        adversarial = [Example(f"{r['id']}/adv", (r["perturbed"],), r["label"]) for r in self.records
                       if r["result"] == "successful"]
        return list(context.protocol_train) + adversarial


def _attacking_run(splits: Any, cache: Path, kill_after: int | None = None) -> Attacking:
    seed_everything(0)
    defense = Attacking(AttackingConfig(), _sst2_cnn(splits), kill_after)
    context = context_for(splits.train, splits.validation, attack_cache_root=cache)
    train(defense, context, TrainConfig(epochs=1, batch_size=32, lr=1e-2, optimizer="adam", schedule="constant",
                                        max_grad_norm=None))
    return defense


def test_training_time_attack_resumes_after_a_kill(attack_env: Path, tmp_path: Path, registered,
                                                   request: pytest.FixtureRequest) -> None:
    if ran_in_child(request):
        return
    registered(Attacking, "test-attacking")
    splits = _sst2(120)
    uninterrupted = _attacking_run(splits, tmp_path / "A")
    assert len(uninterrupted.new_records) == 6 and len(uninterrupted.records) == 6
    assert any(r["result"] == "successful" for r in uninterrupted.records)
    assert [r["id"] for r in uninterrupted.records] == [ex.id for ex in splits.train[:6]]

    with pytest.raises(_Killed):
        _attacking_run(splits, tmp_path / "B", kill_after=2)
    resumed = _attacking_run(splits, tmp_path / "B")
    assert len(resumed.new_records) == 4  # only the examples the killed run had not finished
    assert _comparable(resumed.records) == _comparable(uninterrupted.records)
    assert state_sha256(resumed.model) == state_sha256(uninterrupted.model)  # and the same training

    again = _attacking_run(splits, tmp_path / "B")
    assert again.new_records == [] and again.records == resumed.records  # fully cached: nothing attacked
    files = list((tmp_path / "B").rglob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 6
