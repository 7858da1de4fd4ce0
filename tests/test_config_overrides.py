"""Profile overrides: ``--set KEY=VALUE`` on the command line and profiles that ``extends:`` another.

No training: profiles are loaded and expanded, and the CLI runs ``--dry-run`` only.
"""
from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from suite.cli import main
from suite.core.errors import SuiteError
from suite.run.config import load_profile
from suite.run.overrides import Selection, apply_settings, attribute_settings, parse_setting
from suite.run.runner import expand_jobs

SST_CNN = {"datasets": ["sst2_sentence"], "backbones": ["cnn"]}


def jobs_of(profile: str, settings: list[str], **selection) -> list:
    """The jobs ``suite run --profile <profile> --set ...`` runs (marked as the CLI marks them)."""
    loaded = load_profile(profile, settings)
    jobs = expand_jobs(loaded, **selection)
    return attribute_settings(profile, settings, jobs, Selection(**selection))[0]


def one_job(profile: str, settings: list[str], defense: str):
    (job,) = jobs_of(profile, settings, defenses=[defense], **SST_CNN)
    return job


def write(path: Path, body: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)


# --- --set: parsing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("defenses.adv-aug.rounds=2", 2), ("train.lr=0.1", 0.1), ("defenses.adv-aug.fresh_model=true", True),
    ("defenses.adv-aug.attack_examples=null", None), ("seeds=[0, 1]", [0, 1]), ("attacks=[pwws]", ["pwws"]),
    ("defenses.ada.train_attack=pwws", "pwws"), ("description=a b = c", "a b = c"),
    ("defenses.adv-aug.attack_examples=", None), ("datasets.trec={scheme: flat}", {"scheme": "flat"}),
])
def test_values_are_yaml(text: str, value) -> None:
    setting = parse_setting(text)
    assert setting.value == value and type(setting.value) is type(value)
    assert setting.key == text.split("=", 1)[0] and setting.option == f"--set {text}"


def test_a_setting_is_recorded_in_a_canonical_form() -> None:
    assert parse_setting("defenses.adv-aug.rounds= 2").canonical == "defenses.adv-aug.rounds=2"
    assert parse_setting("seeds=[0,1]").canonical == "seeds=[0, 1]"
    assert parse_setting("defenses.ada.train_attack=pwws").canonical == "defenses.ada.train_attack=pwws"
    assert parse_setting("description='2'").canonical == 'description="2"'  # a string that reads as a number


@pytest.mark.parametrize("text, message", [
    ("defenses.adv-aug.rounds", "expected KEY=VALUE (a dotted path into the profile, e.g. defenses.adv-aug.rounds=2), "
                                "got 'defenses.adv-aug.rounds'"),
    ("=2", "expected KEY=VALUE"),
    ("defenses..rounds=2", "the key 'defenses..rounds' has an empty part"),
    ("train.=1", "has an empty part"),
    ("attacks=[pwws", "the value '[pwws' is not valid YAML"),
    ("source=x", "source is not a profile setting"),
    ("extends=cpu", "extends cannot be set on the command line"),
])
def test_malformed_settings_are_one_line(text: str, message: str) -> None:
    with pytest.raises(SuiteError) as info:
        parse_setting(text)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- --set: applying ------------------------------------------------------------------------------------------

def test_apply_creates_mappings_on_the_way_and_leaves_its_argument_alone() -> None:
    raw = {"defenses": {"pgd": {}, "finetune": None}, "seeds": [0], "overrides": [{"match": {}, "train": {}}]}
    settings = [parse_setting(t) for t in ("defenses.pgd.perturbation.steps=3", "defenses.finetune.x=1",
                                           "seeds=[1, 2]", "overrides.0.train.epochs=4", "defenses.pgd.perturbation.steps=4")]
    out = apply_settings(raw, settings)
    assert out == {"defenses": {"pgd": {"perturbation": {"steps": 4}}, "finetune": {"x": 1}}, "seeds": [1, 2],
                   "overrides": [{"match": {}, "train": {"epochs": 4}}]}  # the last of two settings wins
    assert raw == {"defenses": {"pgd": {}, "finetune": None}, "seeds": [0], "overrides": [{"match": {}, "train": {}}]}


@pytest.mark.parametrize("text, message", [
    ("train.epochs.x=1", "--set train.epochs.x=1: train.epochs is 3, not a mapping of settings; set it whole "
                         "(--set train.epochs=...)"),
    ("overrides.2.train.epochs=1", "--set overrides.2.train.epochs=1: overrides is a list of 1 entry (index 0..0)"),
    ("overrides.first.train.epochs=1", "--set overrides.first.train.epochs=1: overrides is a list of 1 entry (index 0..0); "
                                       "index it with a number or set it whole (--set overrides=[...])"),
])
def test_a_path_through_a_value_is_one_line(text: str, message: str) -> None:
    with pytest.raises(SuiteError) as info:
        apply_settings({"train": {"epochs": 3}, "overrides": [{}]}, [parse_setting(text)])
    assert str(info.value).startswith(message)


def test_nested_perturbation_setting_merges_over_the_defenses_defaults() -> None:
    from defenses import DEFENSES

    job = one_job("smoke", ["defenses.pgd.perturbation.steps=3"], "pgd")
    default = dataclasses.asdict(DEFENSES.get("pgd").Config().perturbation)
    assert job.defense_config == {"perturbation": {**default, "steps": 3}} and default["steps"] == 5
    trades = one_job("smoke", ["defenses.trades.perturbation.step_size=0.1"], "trades")
    assert trades.defense_config["perturbation"]["steps"] == 2  # the profile's own setting is kept
    assert trades.defense_config["perturbation"]["step_size"] == 0.1


def test_settings_of_every_section_reach_the_jobs() -> None:
    settings = ["backbones.cnn.epochs=1", "datasets.sst2_sentence.train_limit=50", "protocol.split_seed=7",
                "attacks=[pwws]", "interpretation.methods=[]", "defenses.adv-aug.train_attack=textfooler-offline"]
    job = one_job("smoke", settings, "adv-aug")
    assert job.train.epochs == 1 and job.split.train_limit == 50 and job.split.split_seed == 7
    assert job.attacks == ("pwws",) and not job.interpretation.enabled
    assert job.defense_config["train_attack"] == "textfooler-offline"
    assert job.profile_overrides == ("backbones.cnn.epochs=1", "datasets.sst2_sentence.train_limit=50",
                                     "protocol.split_seed=7", "defenses.adv-aug.train_attack=textfooler-offline")


def test_a_list_entry_is_set_by_its_index() -> None:
    (job,) = jobs_of("smoke", ["overrides.0.defense.attack_examples=5"], defenses=["adv-aug"],
                     datasets=["sst2_sentence"], backbones=["minilm-l6"])
    assert job.defense_config["attack_examples"] == 5  # smoke's override for MiniLM-L6: 10


@pytest.mark.parametrize("text, message", [
    ("defenses.adv-aug.roundz=2", "--set defenses.adv-aug.roundz=2: defenses.adv-aug: unknown setting 'roundz' "
                                  "(did you mean 'rounds'?)"),
    ("defenses.pgd.perturbation.stpes=3", "--set defenses.pgd.perturbation.stpes=3: defenses.pgd.perturbation: "
                                          "unknown setting 'stpes' (did you mean 'steps'?)"),
    ("train.epoch=1", "--set train.epoch=1: train: unknown setting 'epoch' (did you mean 'epochs'?)"),
    ("seedz=[1]", "--set seedz=[1]: unknown setting 'seedz' (did you mean 'seeds'?)"),
    ("defenses.adv-aug.rounds=two", "--set defenses.adv-aug.rounds=two: defenses.adv-aug.rounds: must be an integer, "
                                    "got 'two'"),
    ("backbones.cnn.lr=-1", "--set backbones.cnn.lr=-1: backbones.cnn.lr: must be > 0, got -1"),
    ("defenses.adv-agu.rounds=1", "--set defenses.adv-agu.rounds=1: defenses: unknown defense 'adv-agu': "
                                  "did you mean 'adv-aug' or"),
    ("backbones.cnm.epochs=1", "--set backbones.cnm.epochs=1: backbones: unknown backbone 'cnm': did you mean 'cnn'"),
])
def test_a_bad_setting_is_the_profiles_own_error_naming_the_set_option(text: str, message: str) -> None:
    with pytest.raises(SuiteError) as info:
        load_profile("smoke", ["defenses.pgd.perturbation.steps=3", text])  # the good one is not blamed
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_nonexistent_defense_names_the_registered_ones() -> None:
    with pytest.raises(SuiteError) as info:
        load_profile("smoke", ["defenses.nonexistent.x=1"])
    message = str(info.value)
    assert message.startswith("--set defenses.nonexistent.x=1: defenses: unknown defense 'nonexistent': ")
    assert "run 'suite list defenses'" in message and "adv-aug" in message and "finetune" in message


def test_a_registered_defense_the_profile_does_not_list_is_added_with_the_setting() -> None:
    assert "trades" not in load_profile("cpu").defenses
    profile = load_profile("cpu", ["defenses.trades.beta=2.0"])
    assert profile.defenses["trades"] == {"beta": 2.0}
    with pytest.raises(SuiteError, match=r"^--set defenses\.trades\.bta=2: defenses\.trades: unknown setting 'bta' "
                                         r"\(did you mean 'beta'\?\)$"):
        load_profile("cpu", ["defenses.trades.bta=2"])


def test_an_error_of_the_profile_itself_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """\
        name: bad
        version: 1
        description: d
        datasets: {trec: {}}
        backbones: {cnn: {epochs: 0}}
        defenses: {finetune: {}}
    """)
    with pytest.raises(SuiteError, match=rf"^{path}: backbones\.cnn\.epochs: must be >= 1, got 0$"):
        load_profile(path, ["train.lr=0.1"])
    assert load_profile(path, ["backbones.cnn.epochs=1"]).backbones["cnn"] == {"epochs": 1}  # fixed by --set


# --- --set: the jobs it changes, their hash and record -----------------------------------------------------------

def test_an_override_changes_the_hash_of_the_jobs_it_changes_and_only_theirs() -> None:
    plain = {j.defense: j for j in jobs_of("smoke", [], defenses=["adv-aug", "finetune"], **SST_CNN)}
    changed = {j.defense: j for j in jobs_of("smoke", ["defenses.adv-aug.rounds=2"], defenses=["adv-aug", "finetune"],
                                             **SST_CNN)}
    assert changed["adv-aug"].defense_config["rounds"] == 2 and plain["adv-aug"].defense_config["rounds"] == 1
    assert changed["adv-aug"].config_hash() != plain["adv-aug"].config_hash()
    assert changed["adv-aug"].resolved()["profile_overrides"] == ["defenses.adv-aug.rounds=2"]
    assert "profile_overrides" not in plain["adv-aug"].resolved()
    # finetune is not changed by the setting: it is the profile's own job, hash and all
    assert changed["finetune"] == plain["finetune"] and changed["finetune"].profile_overrides == ()
    assert changed["finetune"].config_hash() == plain["finetune"].config_hash()
    # and the plain run keeps its hash (loading with settings changes nothing for the next plain load)
    assert one_job("smoke", [], "adv-aug").config_hash() == plain["adv-aug"].config_hash()


def test_the_run_record_carries_the_overrides() -> None:
    from suite.core.records import RunRecord

    job = one_job("smoke", ["defenses.adv-aug.rounds=2"], "adv-aug")
    record = RunRecord.new(config=job.resolved(), config_hash=job.config_hash(), data={}, data_sha256={},
                           backbone_facts={}, substitutions=[], environment={},
                           attack_set={"sha256": "0" * 64, "size": 1})
    assert record.params["profile_overrides"] == '["defenses.adv-aug.rounds=2"]'
    assert record.job["config"]["profile_overrides"] == ["defenses.adv-aug.rounds=2"]


def test_a_setting_that_changes_nothing_keeps_the_hash_and_is_reported() -> None:
    plain = one_job("smoke", [], "adv-aug")
    settings = ["defenses.adv-aug.rounds=1", "train.epochs=1"]  # rounds: smoke's own; epochs: cnn sets 2
    loaded = load_profile("smoke", settings)
    jobs = expand_jobs(loaded, defenses=["adv-aug"], **SST_CNN)
    marked, unused = attribute_settings("smoke", settings, jobs, Selection(["adv-aug"], **SST_CNN))
    assert marked == [plain] and marked[0].config_hash() == plain.config_hash()
    assert [s.text for s in unused] == settings
    _, unused = attribute_settings("smoke", ["backbones.cnn.epochs=1"], jobs_of("smoke", ["backbones.cnn.epochs=1"],
                                                                                 defenses=["adv-aug"], **SST_CNN))
    assert unused == []


def test_seeds_from_a_setting_are_the_plain_jobs_of_those_seeds() -> None:
    settings = ["seeds=[0, 5]"]
    jobs = jobs_of("smoke", settings, defenses=["finetune"], **SST_CNN)
    assert [j.seed for j in jobs] == [0, 5] and all(not j.profile_overrides for j in jobs)
    (five,) = jobs_of("smoke", [], defenses=["finetune"], seeds=[5], **SST_CNN)
    assert jobs[1].config_hash() == five.config_hash()
    loaded = expand_jobs(load_profile("smoke", settings), defenses=["finetune"], **SST_CNN)
    assert attribute_settings("smoke", settings, loaded, Selection(["finetune"], **SST_CNN))[1] == []  # it selects


def test_settings_that_only_change_a_job_together_are_all_recorded() -> None:
    settings = ["defenses.adv-aug.rounds=2", "defenses.adv-aug.rounds=2"]  # either alone still sets it
    (job,) = jobs_of("smoke", settings, defenses=["adv-aug"], **SST_CNN)
    assert job.profile_overrides == ("defenses.adv-aug.rounds=2", "defenses.adv-aug.rounds=2")


# --- extends ------------------------------------------------------------------------------------------------------

CHILD = """\
    extends: smoke
    name: child
    version: 2
    seeds: [1, 2]
    attacks: [pwws]
    defenses:
      adv-aug: {rounds: 2}
      trades: {perturbation: {step_size: 0.1}}
"""


def test_extends_deep_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    smoke = load_profile("smoke")
    child = load_profile(write(tmp_path / "child.yaml", CHILD))
    assert (child.name, child.version, child.seeds, child.attacks) == ("child", 2, (1, 2), ("pwws",))
    assert child.description == f"extends smoke: {smoke.description}"
    assert child.defenses["adv-aug"] == {"rounds": 2, "attack_examples": 40}  # merged with smoke's
    assert child.defenses["trades"] == {"perturbation": {"steps": 2, "step_size": 0.1}}
    assert set(child.defenses) == set(smoke.defenses) and child.backbones == smoke.backbones
    assert child.overrides == smoke.overrides and child.grid == smoke.grid and child.protocol == smoke.protocol
    job = expand_jobs(child, defenses=["adv-aug"], seeds=[1], **SST_CNN)[0]
    assert job.profile == "child" and job.profile_version == 2 and job.defense_config["rounds"] == 2
    assert job.config_hash() != one_job("smoke", [], "adv-aug").config_hash()


def test_extends_a_relative_path_in_a_chain(tmp_path: Path) -> None:
    write(tmp_path / "base" / "parent.yaml", """\
        extends: smoke
        name: parent
        version: 1
        description: the parent
        train: {epochs: 7}
        backbones: {cnn: {max_grad_norm: 0.5}, lstm: {max_grad_norm: 0.5}}
    """)
    kid_text = "extends: base/parent.yaml\nname: kid\nversion: 1\nseeds: [3]\nbackbones: {cnn: {max_grad_norm: null}}\n"
    path = write(tmp_path / "kid.yaml", kid_text)
    kid = load_profile(path)
    assert kid.description == "extends base/parent.yaml: the parent" and kid.seeds == (3,)
    assert kid.train == {"cpu_threads": 1, "epochs": 7}
    cells = {j.backbone: j for j in expand_jobs(kid, defenses=["finetune"], datasets=["sst2_sentence"])}
    assert cells["cnn"].train.max_grad_norm is None and cells["lstm"].train.max_grad_norm == 0.5  # null replaces
    assert cells["cnn"].train.epochs == 2 and cells["cnn"].train.batch_size == 50  # smoke's cnn settings, merged
    assert cells["minilm-l6"].train.epochs == 2 and cells["minilm-l6"].train.max_grad_norm == 1.0
    assert kid.source == f"{path} (extends base/parent.yaml, smoke)"
    with pytest.raises(SuiteError, match=rf"^{path} \(extends base/parent\.yaml, smoke\): seeds: each seed"):
        load_profile(write(tmp_path / "kid.yaml", kid_text.replace("[3]", "[-1]")))


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: b.yaml\nname: a\nversion: 1\n", "b.yaml": "extends: a.yaml\nname: b\nversion: 1\n"},
     r"b\.yaml: extends: a\.yaml makes a cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"),
    ({"a.yaml": "extends: a.yaml\nname: a\nversion: 1\n"}, r"a\.yaml: extends: a\.yaml makes a cycle"),
    ({"a.yaml": "extends: smoke\nversion: 1\n"}, r"a\.yaml: a profile that extends smoke needs its own name"),
    ({"a.yaml": "extends: smoke\nname: a\n"}, r"a\.yaml: a profile that extends smoke needs its own version"),
    ({"a.yaml": "extends: smoke\nname: smoke\nversion: 2\n"}, r"name: 'smoke' is the name of the profile it extends"),
    ({"a.yaml": "extends: smoke\nname: cpu\nversion: 2\n"}, r"name: 'cpu' is the registered profile .*cpu\.yaml"),
    ({"a.yaml": "extends: smok\nname: a\nversion: 1\n"},
     r"a\.yaml: extends: unknown profile 'smok': did you mean 'smoke'\?"),
    ({"a.yaml": "extends: nope.yaml\nname: a\nversion: 1\n"}, r"a\.yaml: extends: profile .*nope\.yaml: file not found"),
    ({"a.yaml": "extends: [smoke, cpu]\nname: a\nversion: 1\n"}, r"a\.yaml: extends: must name one profile"),
    ({"a.yaml": "extends: b.yaml\nname: a\nversion: 1\n", "b.yaml": "- x\n"},
     r"b\.yaml: a profile must be a YAML mapping \(it is extended by .*a\.yaml\)"),
])
def test_bad_extends_is_one_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(SuiteError) as info:
        load_profile(str(tmp_path / "a.yaml"))
    assert "\n" not in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_settings_apply_after_extends(tmp_path: Path) -> None:
    path = write(tmp_path / "child.yaml", CHILD)
    (job,) = jobs_of(path, ["defenses.adv-aug.rounds=4"], defenses=["adv-aug"], seeds=[1], **SST_CNN)
    assert job.profile == "child" and job.defense_config["rounds"] == 4
    assert job.defense_config["attack_examples"] == 40
    assert job.profile_overrides == ("defenses.adv-aug.rounds=4",)


# --- the CLI ------------------------------------------------------------------------------------------------------

DRY = ["run", "--profile", "smoke", "--dataset", "sst2_sentence", "--backbone", "cnn", "--dry-run"]


def test_dry_run_shows_each_jobs_defense_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(DRY + ["--defense", "adv-aug", "--defense", "pgd", "--defense", "finetune"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert out.startswith("profile smoke v1: 3 job(s)")
    assert rows["adv-aug"].endswith("rounds=1 attack_examples=40")
    assert rows["pgd"].endswith("defaults") and rows["finetune"].endswith("defaults")
    assert "changed by --set" not in out


def test_dry_run_with_settings(capsys: pytest.CaptureFixture[str]) -> None:
    argv = DRY + ["--defense", "adv-aug", "--defense", "pgd", "--set", "defenses.adv-aug.rounds=2",
                  "--set", "defenses.pgd.perturbation.steps=3", "--set", "train.epochs=1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("profile smoke v1 modified by --set defenses.adv-aug.rounds=2 --set "
                                   "defenses.pgd.perturbation.steps=3 --set train.epochs=1: 2 job(s)")
    rows = {line.split()[0]: line for line in captured.out.splitlines()[3:]}
    assert "rounds=2 attack_examples=40" in rows["adv-aug"] and rows["adv-aug"].endswith("defenses.adv-aug.rounds")
    assert "perturbation.steps=3" in rows["pgd"] and rows["pgd"].endswith("defenses.pgd.perturbation.steps")
    assert captured.err == ("suite: note: --set train.epochs=1 changes none of the 2 selected job(s) (another setting "
                            "takes precedence, e.g. a backbone's own training settings or an overrides: entry)\n")


def test_dry_run_of_an_extending_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "child.yaml", CHILD)
    assert main(["run", "--profile", path, "--defense", "adv-aug", "--dataset", "sst2_sentence", "--backbone", "cnn",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("profile child v2: 2 job(s)") and "rounds=2 attack_examples=40" in out


@pytest.mark.parametrize("setting, says", [
    ("defenses.adv-aug.rounds", ["suite: error: suite run: argument --set: expected KEY=VALUE",
                                 "got 'defenses.adv-aug.rounds'; see 'suite run --help'"]),
    ("seeds=[0", ["suite: error: suite run: argument --set: 'seeds=[0': the value '[0' is not valid YAML"]),
])
def test_cli_malformed_setting_is_exit_2_one_line(setting: str, says: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(DRY + ["--defense", "adv-aug", "--set", setting])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and all(s in lines[0] for s in says), lines


def test_cli_unknown_setting_is_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(DRY + ["--defense", "adv-aug", "--set", "defenses.adv-aug.roundz=2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err == ("suite: error: --set defenses.adv-aug.roundz=2: defenses.adv-aug: unknown setting "
                            "'roundz' (did you mean 'rounds'?)\n")
