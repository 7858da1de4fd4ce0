"""Profiles, training settings, job expansion, config hashing and the CLI front end."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from suite.cli import main
from suite.run.config import PROFILES, Job, ProtocolConfig, TrainConfig, load_profile
from suite.data import SplitOptions
from suite.core.errors import SuiteError
from suite.core.typed import from_mapping
from suite.run.runner import expand_jobs

DIGESTS = {"trec/train": "a" * 64, "trec/test": "b" * 64}


def make_job(**changes) -> Job:
    job = Job(profile="t", profile_version=1, dataset="trec", split=SplitOptions(scheme="flat"),
              backbone="cnn", train=TrainConfig(epochs=2, lr=1e-3), backbone_options={"a": 1, "b": 2},
              defense="finetune", defense_config={}, seed=0, protocol=ProtocolConfig())
    return dataclasses.replace(job, **changes)


# --- config hash -------------------------------------------------------------------------------

def test_hash_is_stable_for_equal_jobs() -> None:
    h = make_job().config_hash(DIGESTS)
    assert h == make_job().config_hash(dict(DIGESTS))
    assert len(h) == 16 and int(h, 16) >= 0


_STRING_ALTERNATIVES = {"optimizer": "adam", "schedule": "constant", "select": "last", "device": "cpu"}


def _alternative(field: str, value):
    """A valid value of TrainConfig.<field> other than ``value`` (covers fields added later)."""
    if field in _STRING_ALTERNATIVES:
        return _STRING_ALTERNATIVES[field]
    if value is None:
        return 1
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    raise AssertionError(f"add an alternative value for TrainConfig.{field} ({value!r}) to this test")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_hash_changes_with_every_training_setting(field: str) -> None:
    base = make_job()
    value = _alternative(field, getattr(base.train, field))
    assert getattr(base.train, field) != value
    changed = make_job(train=dataclasses.replace(base.train, **{field: value}))
    assert changed.config_hash(DIGESTS) != base.config_hash(DIGESTS)
    assert changed.resolved()["train"][field] == value


@pytest.mark.parametrize("changes", [
    {"seed": 1},
    {"dataset": "sst2_sentence"},
    {"backbone": "lstm"},
    {"split": SplitOptions(scheme="flat", split_seed=1)},
    {"split": SplitOptions(scheme="flat", train_limit=10)},
    {"backbone_options": {"a": 1, "b": 3}},
    {"protocol": ProtocolConfig(split_seed=1)},
    {"defense_config": {"x": 1}},
], ids=lambda c: next(iter(c)))
def test_hash_changes_with_job_fields(changes) -> None:
    assert make_job(**changes).config_hash(DIGESTS) != make_job().config_hash(DIGESTS)


def test_hash_changes_with_data_digest() -> None:
    base = make_job().config_hash(DIGESTS)
    assert make_job().config_hash({**DIGESTS, "trec/test": "c" * 64}) != base
    assert make_job().config_hash({"trec/train": "a" * 64}) != base
    assert make_job().config_hash() != base


def test_hash_ignores_dict_ordering() -> None:
    reordered = {k: DIGESTS[k] for k in reversed(list(DIGESTS))}
    assert list(reordered) != list(DIGESTS)
    a = make_job(backbone_options={"a": 1, "b": 2})
    b = make_job(backbone_options={"b": 2, "a": 1})
    assert a.config_hash(DIGESTS) == b.config_hash(reordered)


def test_hash_ignores_attacks() -> None:
    assert make_job(attacks=("pwws",)).config_hash(DIGESTS) == make_job().config_hash(DIGESTS)


# --- profiles -----------------------------------------------------------------------------------

def write_profile(tmp_path: Path, body: str) -> str:
    path = tmp_path / "custom.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)


GOOD = """\
    name: custom
    version: 3
    description: test profile
    seeds: [0, 1]
    protocol: {split_seed: 5, attack_set_seed: 6, attack_set_size: 10}
    train: {lr: 2e-5, epochs: 1}
    datasets:
      trec: {scheme: flat, train_limit: 10}
      sst2_sentence: {}
    backbones:
      cnn: {batch_size: 4}
      lstm: {options: {hidden_size: 8}}
    defenses:
      finetune: {}
    overrides:
      - match: {dataset: trec, backbone: cnn}
        train: {epochs: 5}
"""


def test_custom_profile_loads_and_expands(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, GOOD))
    assert profile.name == "custom" and profile.version == 3 and profile.seeds == (0, 1)
    assert profile.protocol == ProtocolConfig(5, 6, 10)
    jobs = expand_jobs(profile)
    assert len(jobs) == 2 * 2 * 1 * 2
    by_cell = {(j.dataset, j.backbone, j.seed): j for j in jobs}
    trec_cnn = by_cell[("trec", "cnn", 0)]
    assert trec_cnn.train.epochs == 5 and trec_cnn.train.batch_size == 4
    assert trec_cnn.train.lr == pytest.approx(2e-5) and isinstance(trec_cnn.train.lr, float)
    assert trec_cnn.split == SplitOptions(scheme="flat", split_seed=5, train_limit=10)
    assert by_cell[("sst2_sentence", "cnn", 0)].train.epochs == 1  # override does not match
    assert by_cell[("trec", "lstm", 1)].train.epochs == 1
    assert by_cell[("trec", "lstm", 1)].backbone_options == {"hidden_size": 8}
    assert by_cell[("trec", "cnn", 0)].backbone_options == {}


def test_expand_jobs_selects_cells(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, GOOD))
    jobs = expand_jobs(profile, datasets=["mr"], backbones=["cnn"], seeds=[7])
    assert [(j.dataset, j.backbone, j.defense, j.seed) for j in jobs] == [("mr", "cnn", "finetune", 7)]
    with pytest.raises(SuiteError, match="did you mean 'trec'"):
        expand_jobs(profile, datasets=["trek"])


@pytest.mark.parametrize("body, hint", [
    (GOOD.replace("    seeds: [0, 1]", "    seed: [0, 1]"), "unknown setting 'seed' (did you mean 'seeds'?)"),
    (GOOD.replace("train: {lr: 2e-5, epochs: 1}", "train: {lr: 2e-5, epoch: 1}"),
     "unknown setting 'epoch' (did you mean 'epochs'?)"),
    (GOOD.replace("attack_set_size: 10", "attack_set_sizes: 10"),
     "unknown setting 'attack_set_sizes' (did you mean 'attack_set_size'?)"),
    (GOOD.replace("        train: {epochs: 5}", "        trian: {epochs: 5}"),
     "unknown setting 'trian' (did you mean 'train'?)"),
], ids=["profile-key", "train-key", "protocol-key", "override-key"])
def test_unknown_keys_get_a_hint(tmp_path: Path, body: str, hint: str) -> None:
    assert body != GOOD
    path = write_profile(tmp_path, body)
    with pytest.raises(SuiteError) as info:
        load_profile(path)
    assert hint in str(info.value)
    assert path in str(info.value)


def test_unknown_backbone_train_setting_gets_a_hint_when_the_profile_loads(tmp_path: Path) -> None:
    path = write_profile(tmp_path, GOOD.replace("cnn: {batch_size: 4}", "cnn: {batchsize: 4}"))
    with pytest.raises(SuiteError, match=r"backbones\.cnn: unknown setting 'batchsize' \(did you mean 'batch_size'\?\)"):
        load_profile(path)


def test_unknown_split_option_gets_a_hint_when_the_profile_loads(tmp_path: Path) -> None:
    path = write_profile(tmp_path, GOOD.replace("train_limit: 10", "train_limits: 10"))
    with pytest.raises(SuiteError, match=r"datasets\.trec: unknown setting 'train_limits' \(did you mean 'train_limit'"):
        load_profile(path)


@pytest.mark.parametrize("settings, message", [
    ({"optimizer": "sgd"}, "^optimizer: 'sgd' is not one of adamw, adam$"),
    ({"schedule": "cosine"}, "^schedule: 'cosine'"),
    ({"select": "best"}, "^select: 'best'"),
    ({"device": "tpu"}, "^device: 'tpu'"),
])
def test_bad_train_values_are_refused(settings, message) -> None:
    with pytest.raises(SuiteError, match=message):
        TrainConfig(**settings)


def test_non_numeric_lr_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"custom\.yaml: train\.lr: must be a number, got 'fast'$"):
        load_profile(write_profile(tmp_path, GOOD.replace("lr: 2e-5", "lr: fast")))


def test_invalid_yaml_is_a_suite_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_profile(write_profile(tmp_path, "name: [unclosed\n"))


def test_unknown_profile_name_suggests() -> None:
    with pytest.raises(SuiteError, match="did you mean 'smoke'"):
        load_profile("smok")


def test_committed_profiles_load_and_expand() -> None:
    assert set(PROFILES.names()) == {"cpu", "paper", "smoke"}
    sizes = {}
    for name in PROFILES.names():
        profile = load_profile(name)
        assert profile.name == name
        jobs = expand_jobs(profile)
        n = len(profile.datasets) * len(profile.backbones) * len(profile.defenses) * len(profile.seeds)
        assert 0 < len(jobs) <= n and (len(jobs) == n or profile.grid)
        assert len({j.config_hash() for j in jobs}) == len(jobs)  # every cell is a distinct job
        sizes[name] = len(jobs)
    # smoke: 24 defenses x (cnn, minilm-l6) on sst2_sentence + finetune on the other 4 cells;
    # cpu: FLAT anchor 2 x 2 x (finetune, adv-aug, flat) + MiniLM sst2_sentence 1 + MiniLM sst2 x 7
    # defenses, 3 seeds each
    assert sizes == {"smoke": 24 * 2 + 4, "cpu": (4 * 3 + 1 + 7) * 3, "paper": 72}


# --- nested settings (a defense's perturbation) -----------------------------------------------------------

NESTED = GOOD.replace("      finetune: {}\n",
                      "      finetune: {}\n      pgd: {perturbation: {steps: 3, max_norm: 0.5e-1}}\n")


def test_nested_defense_settings_merge_over_the_defenses_defaults(tmp_path: Path) -> None:
    from defenses import DEFENSES
    from defenses.perturbation import PerturbationConfig

    assert NESTED != GOOD
    jobs = expand_jobs(load_profile(write_profile(tmp_path, NESTED)), defenses=["pgd"], seeds=[0])
    pgd = DEFENSES.get("pgd").Config
    expected = dataclasses.replace(pgd().perturbation, steps=3, max_norm=0.05)  # step_size etc.: PGD's own
    assert expected == PerturbationConfig(steps=3, step_size=0.04, init_magnitude=0.05, max_norm=0.05)
    for job in jobs:
        assert job.defense_config == {"perturbation": dataclasses.asdict(expected)}
        # what the runner builds the defense from (suite.run.runner.run_job)
        assert from_mapping(pgd, job.defense_config, job.label) == pgd(perturbation=expected)


def test_smoke_trades_sets_only_the_steps() -> None:
    from defenses.trades import TradesConfig

    (job,) = expand_jobs(load_profile("smoke"), defenses=["trades"], datasets=["sst2_sentence"], backbones=["cnn"])
    assert from_mapping(TradesConfig, job.defense_config, "job") == TradesConfig(
        perturbation=dataclasses.replace(TradesConfig().perturbation, steps=2))


def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    path = write_profile(tmp_path, NESTED.replace("{steps: 3,", "{stpes: 3,"))
    with pytest.raises(SuiteError) as info:
        expand_jobs(load_profile(path), defenses=["pgd"])
    assert f"{path}: defenses.pgd.perturbation: unknown setting 'stpes' (did you mean 'steps'?)" == str(info.value)


def test_a_nested_setting_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write_profile(tmp_path, NESTED.replace("{perturbation: {steps: 3, max_norm: 0.5e-1}}", "{perturbation: 3}"))
    with pytest.raises(SuiteError, match=r"defenses\.pgd\.perturbation: expected a mapping of settings \(steps, "):
        expand_jobs(load_profile(path), defenses=["pgd"])


def test_every_defense_config_round_trips_through_asdict() -> None:
    from defenses import DEFENSES

    for name, cls in DEFENSES.items():
        config = cls.Config()
        assert from_mapping(cls.Config, dataclasses.asdict(config), name) == config, name
        assert from_mapping(cls.Config, config, name) is config  # an already-built instance is taken as is
        if "perturbation" in {f.name for f in dataclasses.fields(cls.Config)}:
            built = from_mapping(cls.Config, {"perturbation": config.perturbation}, name)
            assert built.perturbation is config.perturbation


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int = 1
    b: float = 2.0


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = _Inner(a=5)
    deep: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Top:
    outer: _Outer = _Outer(inner=_Inner(a=7, b=3.0))
    other: _Inner = dataclasses.field(default_factory=_Inner)


def test_from_mapping_nested_merge_is_deep_and_coerces_yaml_strings() -> None:
    top = from_mapping(_Top, {"outer": {"inner": {"b": "1e-3"}}}, "x")
    assert top == _Top(outer=_Outer(inner=_Inner(a=7, b=1e-3)))  # a: the outer default's 7, not _Inner's 1
    assert from_mapping(_Top, dataclasses.asdict(top), "x") == top
    with pytest.raises(SuiteError, match=r"^x\.outer\.inner: unknown setting 'c' \(known: a, b\)$"):
        from_mapping(_Top, {"outer": {"inner": {"c": 1}}}, "x")
    with pytest.raises(SuiteError, match=r"^x\.outer\.inner: b: must be a number, got 'big'$"):
        from_mapping(_Top, {"outer": {"inner": {"b": "big"}}}, "x")


def test_paper_profile_override_applies_to_imdb_only() -> None:
    jobs = expand_jobs(load_profile("paper"), backbones=["bert-base-uncased"], seeds=[0])
    lengths = {j.dataset: j.train.max_length for j in jobs}
    assert lengths["imdb"] == 256
    assert {d: n for d, n in lengths.items() if d != "imdb"} == {d: 128 for d in lengths if d != "imdb"}


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_dry_run_prints_the_grid(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--profile", "smoke", "--all", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "profile smoke v1: 52 job(s)" in out
    lines = [line for line in out.splitlines() if line.startswith("finetune ")]
    assert len(lines) == 6  # finetune on every dataset x backbone
    assert any("trec" in line and "lstm" in line for line in lines)
    assert not any(line.startswith("pgd ") and "trec" in line for line in out.splitlines())  # outside the grid


def test_cli_dry_run_of_one_cell(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "trec",
                 "--backbone", "cnn", "--seed", "3", "--seed", "4", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 job(s)" in out
    assert sum(line.startswith("finetune") for line in out.splitlines()) == 2


def test_cli_unknown_defense_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--profile", "smoke", "--defense", "finetunee", "--dry-run"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("suite: error: ")
    assert "did you mean 'finetune'" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_cli_run_without_selection_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--profile", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("suite: error: suite run: nothing selected")


def test_cli_list_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("datasets:")
    assert "sst2_sentence" in out and "advglue_qnli" in out


def test_attack_set_size_selects_a_subset_of_the_pinned_draw_without_changing_the_model(tmp_path: Path) -> None:
    from suite.data.examples import Example
    from suite.run.protocol import pin_attack_set

    full = load_profile(write_profile(tmp_path, GOOD))
    sub = load_profile(write_profile(tmp_path, GOOD.replace("sst2_sentence: {}", "sst2_sentence: {attack_set_size: 4}")))
    job_full = expand_jobs(full, datasets=["sst2_sentence"], backbones=["cnn"], seeds=[0])[0]
    job_sub = expand_jobs(sub, datasets=["sst2_sentence"], backbones=["cnn"], seeds=[0])[0]
    assert (job_full.attack_set_size, job_sub.attack_set_size) == (10, 4)
    assert job_full.config_hash() == job_sub.config_hash()  # same trained model, attacked on fewer examples
    test = [Example(id=f"toy/{i}", texts=(f"text {i}",), label=i % 2) for i in range(50)]
    first = pin_attack_set("toy", test, job_sub.attack_set_size, seed=6, check_committed=False)
    pinned = pin_attack_set("toy", test, job_full.attack_set_size, seed=6, check_committed=False)
    assert len(first.ids) == 4 and set(first.ids) < set(pinned.ids)
    with pytest.raises(SuiteError, match="attack_set_size"):
        SplitOptions(attack_set="full", attack_set_size=4)


def test_grid_restricts_the_profile_cells_but_not_cells_named_outside_it(tmp_path: Path) -> None:
    body = GOOD + """\
    grid:
      - {datasets: [trec], backbones: [cnn]}
      - {datasets: [sst2_sentence], backbones: [lstm]}
"""
    profile = load_profile(write_profile(tmp_path, body))
    cells = {(j.dataset, j.backbone) for j in expand_jobs(profile)}
    assert cells == {("trec", "cnn"), ("sst2_sentence", "lstm")}
    # mr is not configured by the profile: the grid does not restrict the dataset dimension for it
    assert {(j.dataset, j.backbone) for j in expand_jobs(profile, datasets=["mr"])} == {("mr", "cnn"), ("mr", "lstm")}
    with pytest.raises(SuiteError, match="matches no cell of the profile's grid"):
        expand_jobs(profile, datasets=["trec"], backbones=["lstm"])
    bad = body.replace("backbones: [lstm]}", "backbones: [lstn]}")
    with pytest.raises(SuiteError, match="grid lists backbones lstn"):
        load_profile(write_profile(tmp_path, bad))


def test_merge_settings_is_deep_and_leaves_its_arguments_alone() -> None:
    from suite.core.typed import merge_settings

    base = {"perturbation": {"steps": 5, "step_size": 0.04}, "beta": 1.0}
    update = {"perturbation": {"steps": 3}, "weight_lr": 2.0}
    assert merge_settings(base, update) == {"perturbation": {"steps": 3, "step_size": 0.04}, "beta": 1.0,
                                            "weight_lr": 2.0}
    assert base == {"perturbation": {"steps": 5, "step_size": 0.04}, "beta": 1.0}
    assert update["perturbation"] == {"steps": 3}
    assert merge_settings({"p": {"a": 1}}, {"p": None}) == {"p": None}  # a non-mapping replaces


# --- types and ranges checked when settings are built (issue 10) ----------------------------------------

@dataclasses.dataclass(frozen=True)
class _Typed:
    n: int = 1
    x: float = 1.0
    s: str = "a"
    flag: bool = False
    maybe: int | None = None
    ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    match: dict[str, str] = dataclasses.field(default_factory=dict)
    free: dict[str, Any] = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize("settings, message", [
    ({"n": "2"}, "x: n: must be an integer, got '2' (a quoted number: remove the quotes)"),
    ({"n": 2.5}, "x: n: must be an integer, got 2.5"),
    ({"n": True}, "x: n: must be an integer, got True"),
    ({"x": "fast"}, "x: x: must be a number, got 'fast'"),
    ({"x": False}, "x: x: must be a number, got False"),
    ({"s": 5}, "x: s: must be a string, got 5"),
    ({"flag": "yes"}, "x: flag: must be true or false, got 'yes'"),
    ({"maybe": "3"}, "x: maybe: must be an integer or null, got '3' (a quoted number: remove the quotes)"),
    ({"ids": 0}, "x: ids: must be a list of integers, got 0"),
    ({"ids": ["zero"]}, "x: ids: must be a list of integers, got ['zero']"),
    ({"names": [1]}, "x: names: must be a list of strings, got [1]"),
    ({"match": ["a"]}, "x: match: must be a mapping, got ['a']"),
    ({"match": {"k": 1}}, "x: match.k: must be a string, got 1"),
    ({"free": 3}, "x: free: must be a mapping, got 3"),
])
def test_from_mapping_checks_each_value_against_its_annotation(settings, message) -> None:
    with pytest.raises(SuiteError) as info:
        from_mapping(_Typed, settings, "x")
    assert str(info.value) == message


def test_from_mapping_converts_only_what_yaml_cannot_say() -> None:
    built = from_mapping(_Typed, {"x": "2e-5", "ids": [1, 2], "maybe": None, "free": {"any": [1]}}, "x")
    assert built == _Typed(x=2e-5, ids=(1, 2), free={"any": [1]})
    assert type(from_mapping(_Typed, {"x": 3}, "x").x) is int  # an integer is a number: kept (same config hash)
    nested = from_mapping(_Top, {"outer": {"inner": {"a": 4}}}, "f.yaml: defenses.d")
    assert nested.outer.inner.a == 4
    with pytest.raises(SuiteError, match=r"^f\.yaml: defenses\.d\.outer\.inner\.a: must be an integer, got 'four'$"):
        from_mapping(_Top, {"outer": {"inner": {"a": "four"}}}, "f.yaml: defenses.d")


def test_range_errors_name_the_setting_where_it_is() -> None:
    with pytest.raises(SuiteError) as info:
        from_mapping(TrainConfig, {"epochs": 0}, "f.yaml: train")
    assert str(info.value) == "f.yaml: train.epochs: must be >= 1, got 0"
    with pytest.raises(SuiteError, match=r"^f\.yaml: protocol\.attack_set_size: must be >= 1"):
        from_mapping(ProtocolConfig, {"attack_set_size": -3}, "f.yaml: protocol")
    with pytest.raises(SuiteError, match=r"^f\.yaml: datasets\.trec\.attack_set_size: must be >= 1 \(or omit it"):
        from_mapping(SplitOptions, {"attack_set_size": 0}, "f.yaml: datasets.trec")
    with pytest.raises(SuiteError, match=r"^epochs: must be >= 1, got 0$"):  # built directly: the key alone
        TrainConfig(epochs=0)


def test_profile_names_and_cells_are_checked_when_it_loads(tmp_path: Path) -> None:
    path = write_profile(tmp_path, GOOD.replace("sst2_sentence: {}", "sst2_sentenc: {}"))
    with pytest.raises(SuiteError, match=r"datasets: unknown dataset 'sst2_sentenc': did you mean 'sst2_sentence'"):
        load_profile(path)
    path = write_profile(tmp_path, GOOD.replace("train: {epochs: 5}", "train: {epochs: 0}"))
    with pytest.raises(SuiteError, match=r"custom\.yaml: overrides\[0\]\.train\.epochs: must be >= 1, got 0$"):
        load_profile(path)


def test_profile_paths_and_names_are_told_apart(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="file not found"):
        load_profile(str(tmp_path / "missing.yaml"))
    with pytest.raises(SuiteError, match="is a directory"):
        load_profile(str(tmp_path))
    with pytest.raises(SuiteError, match=r"unknown profile 'missing': run 'suite list profiles'"):
        load_profile("missing")


def test_cli_list_check_sets_and_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    from suite.run.check import CHECK_SETS

    assert main(["list", "check-sets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("check-sets:") and all(name in out for name in CHECK_SETS.names())
    assert main(["list", "profiles"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PROFILES.names())
    with pytest.raises(SuiteError, match=r"run 'suite list check-sets'"):
        CHECK_SETS.get("bogus")


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    (["--query-budget", "0"], "argument --query-budget: must be an integer >= 1 (omit it for no limit), got '0'"),
])
def test_cli_numbers_are_checked_by_argparse(argv, message, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--profile", "smoke", "--all", "--dry-run", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == f"suite: error: suite run: {message}; see 'suite run --help'\n"


def test_interpretation_settings_are_typed_and_stay_out_of_the_model_hash(tmp_path: Path) -> None:
    body = GOOD + "    interpretation: {methods: [ig, lime], attacks: [pwws], lime_pairs: 7}\n"
    profile = load_profile(write_profile(tmp_path, body))
    assert profile.interpretation.methods == ("ig", "lime") and profile.interpretation.lime_pairs == 7
    assert profile.interpretation.applies("pwws") and not profile.interpretation.applies("deepwordbug")
    job = expand_jobs(profile)[0]
    assert job.interpretation == profile.interpretation
    plain = expand_jobs(load_profile(write_profile(tmp_path, GOOD)))[0]
    assert not plain.interpretation.enabled
    assert job.config_hash(DIGESTS) == plain.config_hash(DIGESTS)  # the trained model is the same
    with pytest.raises(SuiteError, match=r"interpretation.*methods.*'shap' not one of ig, lime"):
        load_profile(write_profile(tmp_path, GOOD + "    interpretation: {methods: [shap]}\n"))
    with pytest.raises(SuiteError, match=r"interpretation.*k"):
        load_profile(write_profile(tmp_path, GOOD + "    interpretation: {methods: [ig], k: 0}\n"))
