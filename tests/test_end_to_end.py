"""One smoke cell end to end through the CLI: MLflow record, skip on re-run, seed determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite.cli import main
from suite.core import records
from suite.core.records import read_run
from suite.run.config import load_profile

pytestmark = pytest.mark.slow

CELL = ["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "sst2_sentence", "--backbone", "cnn"]
TIMING = {"epoch_time_s", "mean_epoch_time_s"}
EPOCHS = 2  # smoke profile, cnn


def _client(workdir: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow, MlflowClient(uri)


def _runs(mlflow, experiment: str) -> list:
    """The experiment's training runs (not their attack child runs)."""
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list",
                              filter_string=f"tags.`{records.PARENT_RUN_TAG}` IS NULL")


def _histories(client, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_smoke_cell_end_to_end(workdir: Path, mirror: Path, resources: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    # --- first run -------------------------------------------------------------------------------
    assert main(CELL) == 0
    first_out = capsys.readouterr()
    assert "finetune/sst2_sentence/cnn/seed0: done" in first_out.err
    assert (workdir / "mlflow.db").is_file()

    mlflow, client = _client(workdir)
    runs = _runs(mlflow, "suite-smoke")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id in first_out.out

    metrics = run.data.metrics
    assert 0.0 <= metrics["clean_accuracy"] <= 100.0
    assert metrics["best_epoch"] in (1, 2)
    epoch_times = client.get_metric_history(run.info.run_id, "epoch_time_s")
    assert sorted(m.step for m in epoch_times) == list(range(1, EPOCHS + 1))
    assert all(m.value > 0 for m in epoch_times)
    assert metrics["mean_epoch_time_s"] == pytest.approx(sum(m.value for m in epoch_times) / EPOCHS)
    assert len(client.get_metric_history(run.info.run_id, "validation_accuracy")) == EPOCHS

    tags = run.data.tags
    config_hash = tags["config_hash"]
    assert len(config_hash) == 16
    assert tags["suite.dataset"] == "sst2_sentence" and tags["suite.backbone"] == "cnn"
    assert "GloVe" in tags["substitutions"] and "200 test examples" in tags["substitutions"]
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["seed"] == "0"

    artifacts = _artifact_paths(client, run.info.run_id)
    assert {"job.json", "environment.json", "attack_set.json", "checkpoint/model.safetensors",
            "checkpoint/model.json"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "", str(workdir / "download")))
    job = json.loads((local / "job.json").read_text())
    assert job["config_hash"] == config_hash
    assert job["config"]["split"]["test_limit"] == 200
    assert set(job["data_sha256"]) == {"sst2_sentence/train", "sst2_sentence/validation", "sst2_sentence/test"}
    attack_set = json.loads((local / "attack_set.json").read_text())
    assert attack_set["size"] == 20 and len(attack_set["ids"]) == 20 and attack_set["test_examples"] == 200
    assert tags["suite.attack_set_sha256"] == attack_set["sha256"]
    inputs = {d.dataset.name: d.dataset.digest for d in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert inputs == {name: digest[:32] for name, digest in job["data_sha256"].items()}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[records.EXPERIMENT_KIND_TAG] == records.EXPERIMENT_KIND
    # the profile's attacks are child runs; the training run stayed FINISHED
    record = read_run(client, run.info.run_id)
    assert set(record.attacks()) == set(load_profile("smoke").attacks) == set(record.attack_runs)
    assert all(client.get_run(i).info.status == "FINISHED" for i in record.attack_runs.values())
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    env = json.loads((local / "environment.json").read_text())
    assert env["packages"]["torch"] and env["torch_threads"] >= 1
    threads = load_profile("smoke").train.get("cpu_threads")
    if threads:
        assert env["torch_threads"] == threads
        assert run.data.params["train.cpu_threads"] == str(threads)

    # --- second run: same config hash, skipped, no new run -----------------------------------------
    assert main(CELL) == 0
    second_out = capsys.readouterr()
    assert "skipped" in second_out.err
    assert run.info.run_id in second_out.err
    assert len(_runs(mlflow, "suite-smoke")) == 1

    # --- third run: forced, elsewhere; identical metrics except timings ----------------------------
    assert main(CELL + ["--force", "--experiment", "suite-smoke-again"]) == 0
    third_out = capsys.readouterr()
    assert "skipped" not in third_out.err
    assert len(_runs(mlflow, "suite-smoke")) == 1
    again = _runs(mlflow, "suite-smoke-again")
    assert len(again) == 1
    rerun = again[0]
    assert rerun.info.status == "FINISHED" and rerun.info.run_id != run.info.run_id
    assert rerun.data.tags["config_hash"] == config_hash

    first_hist, rerun_hist = _histories(client, run), _histories(client, rerun)
    assert set(first_hist) == set(rerun_hist)
    assert {"clean_accuracy", "train_loss", "validation_accuracy", "best_validation_accuracy"} <= set(first_hist)
    for key in sorted(set(first_hist) - TIMING):
        assert rerun_hist[key] == first_hist[key], key
    first_rec, rerun_rec = read_run(client, run.info.run_id), read_run(client, rerun.info.run_id)
    for attack in first_rec.attacks():  # the rerun's attacks: the same numbers (timings aside)
        first_m, rerun_m = first_rec.attack_metrics(attack), rerun_rec.attack_metrics(attack)
        assert first_m.pop(records.ATTACK_SECONDS) >= 0 and rerun_m.pop(records.ATTACK_SECONDS) >= 0
        assert rerun_m == first_m, attack
