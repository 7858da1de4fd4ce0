"""Typed run records (suite.core.records) on a real MLflow store: what a run logs, attacks as child
runs, reading both back, dataset inputs, the experiment kind, and what goes into the config hash."""
from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from suite.core import records
from suite.core.records import AttackRecord, DatasetInput, RunRecord, read_run, read_runs, training_metrics
from suite.data import load_protocol_splits
from suite.data.examples import Example
from suite.run.config import Job, ProtocolConfig, TrainConfig, defense_provenance
from suite.data import SplitOptions

CONFIG = {"protocol_version": "1", "profile": "p", "profile_version": 3, "dataset": "trec",
          "split": {"scheme": "default"}, "backbone": "cnn", "backbone_options": {}, "train": {"epochs": 2},
          "defense": "pgd", "defense_version": 2, "defense_config": {"steps": 3}, "seed": 1, "protocol": {}}
ATTACK_SET = {"dataset": "trec", "seed": 2024, "size": 2, "test_examples": 4, "sha256": "feed", "ids": ["test/0", "test/1"]}
INPUTS = (DatasetInput("trec", "train", "a" * 64, "file:///mirror/trec/train.jsonl.gz", 90, "train"),
          DatasetInput("trec", "validation", "a" * 64, "file:///mirror/trec/train.jsonl.gz", 10, "train",
                       rule="carved from 'train'"),
          DatasetInput("trec", "test", "b" * 64, "file:///mirror/trec/test.jsonl.gz", 4, "test"))


def new_record(config_hash: str, **config: Any) -> RunRecord:
    return RunRecord.new(config={**CONFIG, **config}, config_hash=config_hash, data={"source": "mirror", "sizes": {"test": 4}},
                         data_sha256={"trec/train": "a" * 64, "trec/test": "b" * 64}, backbone_facts={"vocab": 7},
                         substitutions=["GloVe 50-d"], environment={"git_commit": "c0ffee", "device": "cpu", "python": "3"},
                         attack_set=ATTACK_SET, inputs=INPUTS, train_attack="pwws")


def pwws(aua: float = 12.5, attack_hash: str = "ph1", summary: Any = None) -> AttackRecord:
    return AttackRecord(attack="pwws", attack_hash=attack_hash, variant="stock", substitutions=("WordNet 3.0",),
                        metrics=AttackRecord.textattack_metrics(aua=aua, suc=80.0, queries=33.0, clean_attacked_set=60.0,
                                                                n=2, attack_seconds=1.5),
                        summary={"settings": {"attack": "pwws"}, "metrics": {"aua": aua}} if summary is None else summary,
                        examples=({"id": "test/0", "result": "successful"}, {"id": "test/1", "result": "skipped"}))


def train(tracker: Any, record: RunRecord, tmp: Path) -> str:
    with tracker.start_training(record, "pgd/trec/cnn/seed1") as run:
        run.log_metrics({"train_loss": 0.5}, step=1)
        run.log_metrics(training_metrics(clean_accuracy=75.0, best_epoch=2, best_validation_accuracy=70.0,
                                         mean_epoch_time_s=3.0))
        folder = tmp / f"ckpt-{run.run_id}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        run.log_checkpoint(folder, "ck" * 32)
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite store (MLflow's migrations take seconds); the cwd holds its artifacts."""
    root = tmp_path_factory.mktemp("records")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield f"sqlite:///{root / 'mlflow.db'}", root
    mp.undo()


def tracker_of(store: tuple[str, Path], experiment: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from suite.run.tracking import Tracker

    uri, root = store
    monkeypatch.chdir(root)
    return Tracker(uri, experiment=experiment)


# --- on a store ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_round_trip_with_a_child_attack_run(store, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = tracker_of(store, "round-trip", monkeypatch)
    record = new_record("hash-rt")
    run_id = train(tracker, record, store[1])
    client = tracker.client

    parent = read_run(client, run_id)
    assert parent.attacks() == [] and parent.checkpoint_sha256 == "ck" * 32
    child_id = tracker.log_attack(parent, pwws())

    got = read_run(client, run_id)
    assert got.run_id == run_id and got.experiment == "round-trip" and got.key == ("pgd", "trec", "cnn", "p")
    assert got.seed == 1 and got.config_hash == "hash-rt" and got.git_commit == "c0ffee" and got.device == "cpu"
    assert got.train_attack == "pwws" and got.records_train_attack
    assert {k: v for k, v in got.tags.items() if not k.startswith("mlflow.")} == {
        **record.tags, records.CHECKPOINT_SHA256: "ck" * 32, **pwws().training_tags()}
    assert got.params == record.params and got.params["defense_version"] == "2" and got.params["attack_set.size"] == "2"
    assert got.job == record.job and got.environment == record.environment and got.config == CONFIG
    assert got.metrics == {"train_loss": 0.5, "clean_accuracy": 75.0, "best_epoch": 2.0, "best_validation_accuracy": 70.0,
                           "mean_epoch_time_s": 3.0, "pwws.aua": 12.5, "pwws.suc": 80.0, "pwws.queries": 33.0,
                           "pwws.clean_attacked_set": 60.0, "pwws.n": 2.0, "pwws.attack_seconds": 1.5}
    assert got.attacks() == ["pwws"] and got.attack_hash("pwws") == "ph1"
    assert got.attack_substitutions("pwws") == ("WordNet 3.0",) and got.attack_variant("pwws") == "stock"
    assert got.attack_summaries == {"pwws": pwws().summary} and got.attack_metrics("pwws")["aua"] == 12.5

    # the training run was not reopened; the attack is a FINISHED child run with its own artifacts
    training, child = client.get_run(run_id), client.get_run(child_id)
    assert training.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert child.data.tags[records.PARENT_RUN_TAG] == run_id and child.data.tags[records.KIND] == records.KIND_ATTACK
    assert child.data.tags[records.CONFIG_HASH] == "hash-rt" and child.data.metrics["aua"] == 12.5
    assert {a.path for a in client.list_artifacts(child_id, "attacks")} == {"attacks/pwws.json", "attacks/pwws.jsonl"}
    assert not any(a.path == "attacks" for a in client.list_artifacts(run_id))
    local = Path(client.download_artifacts(child_id, "attacks/pwws.jsonl", str(store[1] / "dl")))
    assert [json.loads(line)["id"] for line in local.read_text().splitlines()] == ["test/0", "test/1"]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"job.json", "environment.json", "attack_set.json",
                                                               "checkpoint"}

    # the dataset inputs carry the split files' digests
    inputs = {d.dataset.name: d for d in training.inputs.dataset_inputs}
    assert set(inputs) == {"trec/train", "trec/validation", "trec/test"}
    assert inputs["trec/test"].dataset.digest == "b" * 32 and inputs["trec/train"].dataset.digest == "a" * 32
    tags = {t.key: t.value for t in inputs["trec/validation"].tags}
    assert tags["mlflow.data.context"] == "validation" and tags["rule"] == "carved from 'train'" and tags["rows"] == "10"

    # find_finished: the training run (the later child carries the same config hash), with its attacks
    found = tracker.find_finished("hash-rt")
    assert found is not None and found.run_id == run_id and found.attack_hash("pwws") == "ph1"
    assert found.job is None  # read without artifacts

    # one reader: `leaderboard collect` reads the same record
    collected = {r.run_id: r for r in read_runs(tracker.tracking_uri)}
    assert child_id not in collected and collected[run_id] == got
    assert read_run(client, run_id, attacks=[]).attacks() == []


@pytest.mark.slow
def test_a_failing_attack_log_leaves_the_training_run_finished(store, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = tracker_of(store, "failing", monkeypatch)
    run_id = train(tracker, new_record("hash-fail"), store[1])
    client = tracker.client
    def broken(text: str, artifact_file: str) -> None:
        raise OSError(f"artifact store full: {artifact_file}")

    with monkeypatch.context() as m:
        m.setattr(tracker.mlflow, "log_text", broken)  # the per-example records cannot be written
        with pytest.raises(OSError, match="artifact store full"):
            tracker.log_attack(read_run(client, run_id), pwws())
    assert client.get_run(run_id).info.status == "FINISHED"
    children = client.search_runs([tracker.experiment_id], f"tags.`{records.PARENT_RUN_TAG}` = '{run_id}'")
    assert [c.info.status for c in children] == ["FAILED"]
    assert read_run(client, run_id).attacks() == []  # a failed child is not gathered

    tracker.log_attack(read_run(client, run_id), pwws(aua=10.0, attack_hash="ph1"))
    tracker.log_attack(read_run(client, run_id), pwws(aua=11.0, attack_hash="ph2"))  # settings changed: the later counts
    got = read_run(client, run_id)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert got.attack_hash("pwws") == "ph2" and got.metrics["pwws.aua"] == 11.0
    assert tracker.find_finished("hash-fail").run_id == run_id


@pytest.mark.slow
def test_attack_stage_logs_an_attack_once(store, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.run.attack_stage as stage
    from suite.run.protocol import AttackSet

    tracker = tracker_of(store, "attack-once", monkeypatch)
    run_id = train(tracker, new_record("hash-once"), store[1])
    calls = []

    def native(spec: Any, model: Any, examples: Any, dataset: str) -> tuple[Any, ...]:
        calls.append(len(examples))
        return {"accuracy": 40.0, "cosine": 0.9}, "kh1", {"settings": {"attack": spec.name}, "metrics": {}}, []

    from attacks.registry import AttackSpec

    monkeypatch.setattr(AttackSpec, "evaluate", native)  # the native (k-PGD) evaluator the stage calls
    test = [Example(id=f"test/{i}", texts=(f"t{i}",), label=0) for i in range(4)]
    attack_set = AttackSet("trec", ("test/0", "test/1"), 2024, 2, 4)
    for _ in range(2):
        logged, errors = stage.attack_and_log(tracker, run_id, None, test, attack_set, ["k-pgd"], "ck", 2024, ["text"],
                                              "trec")
        assert errors == [] and logged == {"k-pgd.accuracy": 40.0, "k-pgd.cosine": 0.9}
    assert calls == [2, 2]  # measured both times (the cache makes that cheap), logged once
    children = tracker.client.search_runs([tracker.experiment_id], f"tags.`{records.PARENT_RUN_TAG}` = '{run_id}'")
    assert len(children) == 1 and children[0].data.tags[records.ATTACK] == "k-pgd"
    assert read_run(tracker.client, run_id).attack_metrics("k-pgd") == {"accuracy": 40.0, "cosine": 0.9}


@pytest.mark.slow
def test_runs_logged_on_the_training_run_itself_still_read(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores written before attacks were child runs: the attack's tags, metrics and summary on the run."""
    import mlflow

    tracker = tracker_of(store, "legacy", monkeypatch)
    with mlflow.start_run(experiment_id=tracker.experiment_id):
        mlflow.set_tags({k: v for k, v in new_record("hash-old").tags.items() if k != records.TRAIN_ATTACK})
        mlflow.log_metrics({"clean_accuracy": 70.0, "pwws.aua": 9.0, "bae.aua": 5.0, "adaptive.w_1": 0.2})
        mlflow.set_tags({"attack.pwws.hash": "p", "attack.bae.hash": "b"})
        mlflow.log_dict({"settings": {"attack": "pwws"}}, "attacks/pwws.json")
        run_id = mlflow.active_run().info.run_id
    got = read_run(tracker.client, run_id)
    assert got.attacks() == ["bae", "pwws"] and got.attack_summaries == {"pwws": {"settings": {"attack": "pwws"}}}
    assert not got.records_train_attack and got.train_attack is None
    only = read_run(tracker.client, run_id, attacks=["pwws"])
    assert only.attacks() == ["pwws"] and "bae.aua" not in only.metrics
    assert only.metrics["pwws.aua"] == 9.0 and only.metrics["adaptive.w_1"] == 0.2


@pytest.mark.slow
def test_experiments_open_on_the_training_runs_view(store, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    tracker = tracker_of(store, "kind-new", monkeypatch)
    assert tracker.client.get_experiment(tracker.experiment_id).tags[records.EXPERIMENT_KIND_TAG] == records.EXPERIMENT_KIND
    old = mlflow.create_experiment("kind-old")  # made by an older suite: no kind tag
    assert records.EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(old).tags
    tracker_of(store, "kind-old", monkeypatch)
    assert tracker.client.get_experiment(old).tags[records.EXPERIMENT_KIND_TAG] == "custom_model_development"


# --- without a store -----------------------------------------------------------------------------------------

def test_dataset_inputs_name_each_split_and_its_file_digest(tmp_mirror) -> None:
    from conftest import make_rows
    from suite.run.tracking import dataset_inputs

    folder = tmp_mirror("trec", {"train": make_rows(100, num_labels=6), "test": make_rows(20, "test", 6)})
    manifest = json.loads((folder / "MANIFEST.json").read_text())["splits"]
    inputs = {i.split: i for i in dataset_inputs(load_protocol_splits("trec"))}
    assert set(inputs) == {"train", "validation", "test"}
    assert inputs["test"].digest == manifest["test"]["sha256"] and inputs["test"].rows == 20
    assert inputs["train"].digest == inputs["validation"].digest == manifest["train"]["sha256"]
    assert (inputs["train"].rows, inputs["validation"].rows) == (90, 10)
    assert "carved from 'train'" in inputs["validation"].rule and inputs["train"].rule is None
    assert inputs["test"].source == (folder / "test.jsonl.gz").resolve().as_uri()
    assert inputs["test"].name == "trec/test"


def test_record_from_dict_reads_the_committed_fixture_layout() -> None:
    fixture = Path(__file__).parent / "fixtures" / "leaderboard" / "runs.json"
    run = RunRecord.from_dict(json.loads(fixture.read_text(encoding="utf-8"))[0])
    assert run.key == ("finetune", "sst2_sentence", "cnn", "cpu") and run.attacks() == ["pwws", "textfooler-offline"]
    assert run.attack_substitutions("textfooler-offline") == ("counter-fitted neighbour lists", "SBERT for USE")
    assert run.attack_substitutions("pwws") == () and not run.records_train_attack
    assert run.attack_metrics("pwws")["aua"] == 8.0 and run.substitutions == (
        "GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)",)


def make_job(**changes: Any) -> Job:
    job = Job(profile="t", profile_version=1, dataset="trec", split=SplitOptions(), backbone="cnn",
              train=TrainConfig(), backbone_options={}, defense="finetune", defense_config={}, seed=0,
              protocol=ProtocolConfig())
    return dataclasses.replace(job, **changes)


def test_a_defense_version_bump_changes_the_config_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    from defenses.finetune import FineTune
    from suite.run.config import load_profile
    from suite.run.runner import expand_jobs

    assert make_job(defense_version=2).config_hash() != make_job().config_hash()
    assert make_job().resolved()["defense_version"] == 1 and "defense_package" not in make_job().resolved()
    profile = load_profile("smoke")
    cell = dict(defenses=["finetune"], datasets=["trec"], backbones=["cnn"])
    (before,) = expand_jobs(profile, **cell)
    monkeypatch.setattr(FineTune, "version", FineTune.version + 1)
    (after,) = expand_jobs(profile, **cell)
    assert after.defense_version == before.defense_version + 1
    assert after.config_hash() != before.config_hash()


def test_a_plugin_defense_records_its_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import suite.run.config as config_mod
    from defenses.base import Defense

    plugin = types.ModuleType("acme_defenses.smooth")
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    cls = type("Smooth", (Defense,), {"__module__": plugin.__name__, "version": 4})
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: {"acme_defenses": ["acme-defenses"]})
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"acme-defenses": "0.3.1"}[name])
    config_mod._distribution_of.cache_clear()
    try:
        assert defense_provenance(cls) == {"defense_version": 4, "defense_package": "acme-defenses==0.3.1"}
        local = type("Local", (Defense,), {"__module__": "my_script"})
        assert defense_provenance(local)["defense_package"] == "my_script (no installed distribution)"
    finally:
        config_mod._distribution_of.cache_clear()
    from defenses.finetune import FineTune

    assert defense_provenance(FineTune) == {"defense_version": 1}
    job = make_job(defense_package="acme-defenses==0.3.1")
    assert job.resolved()["defense_package"] == "acme-defenses==0.3.1" and job.config_hash() != make_job().config_hash()
    tags = RunRecord.new(config={**CONFIG, "defense_package": "acme-defenses==0.3.1"}, config_hash="h", data={},
                         data_sha256={}, backbone_facts={}, substitutions=[], environment={}, attack_set=ATTACK_SET).tags
    assert tags[records.DEFENSE_PACKAGE] == "acme-defenses==0.3.1" and tags[records.DEFENSE_VERSION] == "2"
    assert tags[records.TRAIN_ATTACK] == records.NONE


def test_log_bytes_writes_a_training_artifact(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TrainingContext.log_artifact`` reaches the run through ``Tracker`` run ``log_bytes``."""
    tracker = tracker_of(store, "artifacts", monkeypatch)
    with tracker.start_training(new_record("hash-bytes"), "pgd/trec/cnn/seed1") as run:
        run.log_bytes(b'{"rows": 2}', "data_map/data_map.json")
        run.log_bytes(b"\x89PNG\r\n", "top.png")
    client = tracker.client
    assert {a.path for a in client.list_artifacts(run.run_id, "data_map")} == {"data_map/data_map.json"}
    local = Path(client.download_artifacts(run.run_id, "data_map/data_map.json", str(store[1] / "dl-bytes")))
    assert json.loads(local.read_text()) == {"rows": 2}
    assert any(a.path == "top.png" for a in client.list_artifacts(run.run_id))
