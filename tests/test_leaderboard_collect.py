"""``suite leaderboard collect`` on a tiny real MLflow store written the way suite/run/runner.py writes it
(through suite.core.records: training runs, attacks as child runs)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from leaderboard.entries import build_entries, read_runs, write_entries
from leaderboard.tolerance import DEVIATES, REPRODUCED, load_policy
from suite.cli import main
from suite.core.errors import SuiteError
from suite.core.records import AttackRecord, RunRecord, checkpoint_tags, training_metrics
from suite.run.tracking import Tracker

pytestmark = pytest.mark.slow  # creating the SQLite store (MLflow's migrations) takes ~10-15 s here


def pub(**kw: object) -> types.SimpleNamespace:
    """A published record (leaderboard.published.PublishedResult's fields)."""
    base = dict(paper="flat2022", table="Table 3", dataset="sst2_sentence", backbone="cnn", defense="finetune",
                train_attack=None, eval_attack="pwws", metric="aua", value=8.29, value_text="8.29", std=None,
                flags=[], note=None, settings=None)
    return types.SimpleNamespace(**{**base, **kw})


def _config(seed: int, epochs: int = 10) -> dict:
    return {"protocol_version": "1", "profile": "cpu", "profile_version": 1, "dataset": "sst2_sentence",
            "split": {"scheme": "default", "attack_set": "full"}, "backbone": "cnn", "backbone_options": {},
            "train": {"epochs": epochs, "batch_size": 50}, "defense": "finetune", "defense_config": {}, "seed": seed,
            "protocol": {"split_seed": 2024, "attack_set_seed": 2024, "attack_set_size": 1000}}


def _log_run(tracker: Tracker, seed: int, clean: float, aua: float, epochs: int = 10, fail: bool = False) -> str:
    """A training run written through the run record, and its PWWS attack as a child run."""
    config = _config(seed, epochs)
    subs = ["GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)"]
    record = RunRecord.new(config=config, config_hash=f"hash{seed}{epochs}", data={},
                           data_sha256={"sst2_sentence/test": "d1"}, backbone_facts={}, substitutions=subs,
                           environment={"python": "3.11.7", "torch_threads": 1, "device": "cpu", "git_commit": "feedbeef"},
                           attack_set={"sha256": "abc", "size": 1821})
    try:
        with tracker.start_training(record, f"finetune/sst2_sentence/cnn/seed{seed}") as run:
            run.log_metrics(training_metrics(clean_accuracy=clean, best_epoch=4, best_validation_accuracy=85.0,
                                             mean_epoch_time_s=30.0 + seed))
            run.set_tags(checkpoint_tags(f"ck{seed}"))
            if fail:
                raise RuntimeError("training crashed")
    except RuntimeError:
        return run.run_id
    attack = AttackRecord(attack="pwws", attack_hash="ph", variant="stock",
                          metrics=AttackRecord.textattack_metrics(aua=aua, suc=90.0, queries=40.0 + seed,
                                                                  clean_attacked_set=clean, n=1821, attack_seconds=12.5),
                          summary={"settings": {"attack": "pwws", "attack_variant": "stock", "settings": {},
                                                "query_budget": "unlimited", "seed": 2024}, "metrics": {}})
    tracker.log_attack(tracker.read(run.run_id, artifacts=False), attack)  # the attack stage, after the run closed
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """Three finished seeds, a re-run of seed 0, a run of another config, a FAILED run, a foreign run."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        tracker = Tracker(uri, experiment="suite-cpu")
        ids = {"old0": _log_run(tracker, 0, 70.0, 1.0)}
        ids.update(seed0=_log_run(tracker, 0, 84.0, 8.0), seed1=_log_run(tracker, 1, 84.5, 9.0),
                   seed2=_log_run(tracker, 2, 83.5, 10.0), epochs3=_log_run(tracker, 2, 60.0, 2.0, epochs=3),
                   failed=_log_run(tracker, 3, 50.0, 0.0, fail=True))
        # the same store, another experiment: seeds of the epochs-3 configuration only
        other = Tracker(uri, experiment="suite-cpu-old")
        ids["other_epochs3"] = _log_run(other, 0, 61.0, 3.0, epochs=3)
        with mlflow.start_run(experiment_id=tracker.experiment_id, run_name="not a suite run"):
            mlflow.log_metric("clean_accuracy", 1.0)
    finally:
        mp.undo()
    return uri, ids


def test_read_runs_keeps_finished_suite_runs_only(store) -> None:
    uri, ids = store
    runs = {r.run_id: r for r in read_runs(uri)}
    assert ids["failed"] not in runs and len(runs) == 6
    rec = runs[ids["seed1"]]
    assert rec.experiment == "suite-cpu" and rec.seed == 1 and rec.attacks() == ["pwws"]
    assert rec.job["config"]["train"]["epochs"] == 10 and rec.environment["torch_threads"] == 1
    assert rec.attack_summaries["pwws"]["settings"]["query_budget"] == "unlimited"


def test_collect_entry_json_content(store, tmp_path: Path) -> None:
    uri, ids = store
    published = [pub(table="Table 2", eval_attack="none", metric="clean", value=84.18, value_text="84.18"),
                 pub(value=12.0, value_text="12.00")]
    entries = build_entries(read_runs(uri), published, load_policy())
    assert len(entries) == 1
    e = json.loads(write_entries(entries, tmp_path)[0].read_text(encoding="utf-8"))
    assert e["id"] == "cpu__sst2_sentence__cnn__finetune" and e["schema"] == "suite-leaderboard-entry/1"
    # the most recent run (epochs=3, other experiment) defines the entry; the epochs=10 runs differ
    assert e["config"]["train"]["epochs"] == 3 and e["seeds"] == [0, 2]
    assert {r["run_id"] for r in e["runs"]} == {ids["other_epochs3"], ids["epochs3"]}
    excluded = {x["run_id"]: x["reason"] for x in e["excluded_runs"]}
    assert set(excluded) == {ids["old0"], ids["seed0"], ids["seed1"], ids["seed2"]}
    assert all("train.epochs" in r for r in excluded.values())


def test_collect_cli_is_deterministic(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    uri, ids = store
    # the three epochs=10 seeds only: a store without the later epochs=3 runs
    fake = types.ModuleType("leaderboard.published")
    fake.load_published = lambda paper=None: [
        pub(table="Table 2", eval_attack="none", metric="clean", value=84.18, value_text="84.18"),
        pub(value=12.5, value_text="12.50")]
    monkeypatch.setitem(sys.modules, "leaderboard.published", fake)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key in ("epochs3", "other_epochs3"):
        client.set_terminated(ids[key], status="KILLED")
    try:
        out = tmp_path / "entries"
        assert main(["leaderboard", "collect", "--tracking-uri", uri, "--out", str(out)]) == 0
        first = (out / "cpu__sst2_sentence__cnn__finetune.json").read_bytes()
        assert main(["leaderboard", "collect", "--tracking-uri", uri, "--out", str(out)]) == 0
        assert (out / "cpu__sst2_sentence__cnn__finetune.json").read_bytes() == first
    finally:
        for key in ("epochs3", "other_epochs3"):
            client.set_terminated(ids[key], status="FINISHED")
    printed = capsys.readouterr()
    assert "1 entry written" in printed.out and "1 reproduced, 1 deviates" in printed.out
    e = json.loads(first)
    assert e["seeds"] == [0, 1, 2] and e["metrics"]["clean"]["mean"] == 84.0 and e["metrics"]["clean"]["std"] == 0.5
    assert [v["value"] for v in e["metrics"]["clean"]["values"]] == [84.0, 84.5, 83.5]
    assert {x["run_id"]: x["reason"] for x in e["excluded_runs"]} == {
        ids["old0"]: f"superseded by the later run {ids['seed0']} of seed 0"}
    clean, aua = e["metrics"]["clean"]["published"][0], e["attacks"]["pwws"]["metrics"]["aua"]["published"][0]
    assert (clean["status"], clean["diff"]) == (REPRODUCED, -0.18)
    assert (aua["status"], aua["diff"]) == (DEVIATES, -3.5)
    assert e["attacks"]["pwws"]["settings"] == {"query_budget": "unlimited"} and e["git_commits"] == ["feedbeef"]
    assert e["runs"][0]["environment"]["python"] == "3.11.7" and e["runs"][0]["checkpoint_sha256"] == "ck0"
    assert e["substitutions"] == ["GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)"]


def test_collect_reports_an_unreadable_store(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot open MLflow tracking store"):
        read_runs("notascheme://nowhere")
