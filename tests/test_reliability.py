"""Reliability (issue 10, "data loss and silent wrong results"): nothing a run or a collect already
produced is lost or silently replaced by a wrong number.

1. ``leaderboard collect`` merges; ``--prune`` removes (listing each file).
2. An empty split, or a dataset without a train split, is a one-line error before training.
3. A checkpoint is verified against its ``checkpoint_sha256`` tag before it is loaded.
4. Every path that runs a model applies the protocol's determinism settings.
5. A training run left RUNNING by a killed process is recognised (marked KILLED), not duplicated.
6. Identical ``suite run`` processes on one store: one trains, the other waits (a file lock).
7. A leaderboard entry id is checked before it is used as a file name.
Plus: unwritable / unreachable stores fail in seconds, a full disk is one line, artifacts live
beside the store, and an unexpected exception in one job does not stop the grid.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from suite.cli import main
from suite.core.errors import SuiteError

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"


def _entries() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((FIXTURES / "entries").glob("*.json"))]


def _fake_collect(monkeypatch: pytest.MonkeyPatch, entries: list[dict[str, Any]]) -> None:
    """``leaderboard collect`` reads no store: its runs are a placeholder, its entries ``entries``."""
    import leaderboard.entries

    monkeypatch.setattr(leaderboard.entries, "read_runs", lambda uri: ["a run"])
    monkeypatch.setattr(leaderboard.entries, "build_entries", lambda runs, published, policy: entries)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- 1. collect merges; --prune removes and lists -----------------------------------------------------------

def test_collect_merges_and_never_deletes_an_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "entries"
    shutil.copytree(FIXTURES / "entries", out)
    before = _snapshot(out)
    one = _entries()[:1]
    one = [{**one[0], "seeds": [0, 1, 2, 3]}]  # an updated entry
    _fake_collect(monkeypatch, one)
    assert main(["leaderboard", "collect", "--tracking-uri", "sqlite:///unused.db", "--out", str(out)]) == 0
    after = _snapshot(out)
    assert set(after) == set(before)  # nothing deleted
    name = f"{one[0]['id']}.json"
    assert json.loads(after[name])["seeds"] == [0, 1, 2, 3]  # updated
    assert all(after[n] == before[n] for n in before if n != name)  # the others untouched
    assert "removed" not in capsys.readouterr().err


def test_collect_prune_removes_the_other_entries_and_lists_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "entries"
    shutil.copytree(FIXTURES / "entries", out)
    (out / "notes.json").write_text('{"mine": 1}', encoding="utf-8")  # not an entry: never removed
    entries = _entries()
    _fake_collect(monkeypatch, entries[:1])
    assert main(["leaderboard", "collect", "--tracking-uri", "sqlite:///unused.db", "--out", str(out),
                 "--prune"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{entries[0]['id']}.json", "notes.json"])
    err = capsys.readouterr().err
    removed = [line for line in err.splitlines() if line.startswith("removed ")]
    assert sorted(removed) == sorted(f"removed {out / (e['id'] + '.json')} (not produced by this collect; --prune)"
                                     for e in entries[1:])


# --- 7. entry ids are file names: checked --------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../PWNED", "a/b", "..", "a\\b", "", ".hidden", "x" * 300, 7, None])
def test_collect_refuses_an_unsafe_entry_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], bad: Any) -> None:
    out = tmp_path / "deep" / "er" / "entries"
    entry = {**_entries()[0], "id": bad}
    _fake_collect(monkeypatch, [entry])
    assert main(["leaderboard", "collect", "--tracking-uri", "sqlite:///unused.db", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].startswith("suite: error: entry finetune/") and "not a safe file name" in err[1]
    assert not list(tmp_path.rglob("*.json"))  # nothing written, inside --out or outside it


def test_build_refuses_an_entry_file_with_an_unsafe_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = tmp_path / "entries"
    shutil.copytree(FIXTURES / "entries", entries)
    path = sorted(entries.glob("*.json"))[0]
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**data, "id": "../../PWNED"}), encoding="utf-8")
    site = tmp_path / "a" / "b" / "site"
    assert main(["leaderboard", "build", "--entries", str(entries), "--out", str(site)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"suite: error: {path}: entry id '../../PWNED'")
    assert not (tmp_path / "PWNED.json").exists() and not (tmp_path / "a" / "PWNED.json").exists()


# --- 2. empty splits and datasets without a train split: one line, before training --------------------------

class _NoStore:
    """A tracker that must not be touched: the job fails before it would read or write a run."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the tracker was used ({name}) although the job should have failed first")


def _smoke_job(dataset: str = "trec", **kw: Any) -> Any:
    from suite.run.config import load_profile
    from suite.run.runner import expand_jobs

    return expand_jobs(load_profile("smoke"), defenses=["finetune"], datasets=[dataset], backbones=["cnn"], **kw)[0]


def test_an_empty_test_split_fails_before_training(tmp_mirror) -> None:
    from conftest import make_rows

    from suite.run.runner import run_job

    tmp_mirror("trec", {"train": make_rows(1000, num_labels=6), "test": []})
    with pytest.raises(SuiteError, match="the test split of trec has no examples") as info:
        run_job(_smoke_job(), _NoStore())
    assert "\n" not in str(info.value)


def test_a_dataset_without_a_train_split_is_refused_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "advglue_sst2", "--backbone",
                 "cnn", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("suite: error: dataset advglue_sst2 has no train split") and "--attack advglue" in err[0]


# --- 3. checkpoints are verified against the run's checkpoint_sha256 before every load ----------------------

def _saved_cnn(folder: Path) -> str:
    """A tiny Kim-CNN saved the way a training run saves its checkpoint; returns the weights' sha256."""
    import torch

    from suite.data.mirror import sha256_of
    from suite.models.text_processing import Vocabulary
    from suite.models.word_models import KimCNN

    torch.manual_seed(0)
    model = KimCNN(Vocabulary(["<pad>", "<unk>", "what", "who", "is"]), 6, embedding_dim=8, max_length=10,
                   num_filters=4)
    model.backbone_name = "cnn"
    model.save(folder)
    return sha256_of(folder / "model.safetensors")


class _CheckpointStore:
    """A tracker double serving one finished run's checkpoint folder (both download paths)."""

    def __init__(self, folder: Path) -> None:
        import types

        self.folder = folder
        self.mlflow = types.SimpleNamespace(artifacts=types.SimpleNamespace(
            download_artifacts=lambda run_id, artifact_path: str(folder)))

    def download_checkpoint(self, run_id: str) -> Path:
        return self.folder

    def job_lock(self, config_hash: str, label: str) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def close_stale(self, config_hash: str) -> list[str]:
        return []


def _finished(sha: str, run_id: str = "r1") -> Any:
    from suite.core import records
    from suite.core.records import RunRecord

    return RunRecord(run_id=run_id, experiment="e", start_time=1, metrics={"clean_accuracy": 50.0},
                     tags={records.CHECKPOINT_SHA256: sha, records.CONFIG_HASH: "h"})


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "same size":
        data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # tensor bytes, the header still parses
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


def test_an_intact_checkpoint_loads(tmp_path: Path) -> None:
    from suite.run.attack_stage import checkpoint_of

    sha = _saved_cnn(tmp_path / "ckpt")
    model, got = checkpoint_of(_CheckpointStore(tmp_path / "ckpt"), _finished(sha), "cpu")
    assert got == sha and not model.training


@pytest.mark.parametrize("how", ["same size", "truncated"])
def test_a_corrupted_checkpoint_is_never_loaded(tmp_path: Path, how: str) -> None:
    from suite.run.attack_stage import checkpoint_of

    sha = _saved_cnn(tmp_path / "ckpt")
    _corrupt(tmp_path / "ckpt" / "model.safetensors", how)
    with pytest.raises(SuiteError, match="re-run the job with --force") as info:
        checkpoint_of(_CheckpointStore(tmp_path / "ckpt"), _finished(sha), "cpu")
    assert "\n" not in str(info.value) and "model.safetensors has sha256" in str(info.value)


def test_a_skipped_job_with_a_corrupted_checkpoint_attacks_and_caches_nothing(
        tmp_mirror, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_rows

    import suite.run.runner as runner

    tmp_mirror("trec", {"train": make_rows(1000, num_labels=6), "test": make_rows(30, "test", 6)})
    sha = _saved_cnn(workdir / "ckpt")
    _corrupt(workdir / "ckpt" / "model.safetensors", "same size")
    store = _CheckpointStore(workdir / "ckpt")
    store.find_finished = lambda config_hash: _finished(sha)  # type: ignore[attr-defined]
    attacked = []
    monkeypatch.setattr(runner, "attack_and_log", lambda *a, **k: attacked.append(a) or ({}, []))
    with pytest.raises(SuiteError, match="--force"):
        runner.run_job(_smoke_job(), store, attacks=["pwws"])
    assert attacked == [] and not (workdir / "cache").exists()


# --- 4. every path that runs a model applies the protocol's determinism settings ---------------------------

def _nondeterministic_torch() -> None:
    """A fresh process's torch: oneDNN on, deterministic algorithms off (conftest restores both)."""
    import torch

    torch.backends.mkldnn.enabled = True
    torch.use_deterministic_algorithms(False)


def _determinism() -> tuple[bool, bool]:
    import torch

    return torch.backends.mkldnn.enabled, torch.are_deterministic_algorithms_enabled()


def test_attacking_a_skipped_job_runs_under_the_determinism_settings(tmp_mirror, workdir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_rows

    import suite.run.runner as runner

    tmp_mirror("trec", {"train": make_rows(1000, num_labels=6), "test": make_rows(30, "test", 6)})
    store = _CheckpointStore(workdir)
    store.find_finished = lambda config_hash: _finished("ab" * 32)  # type: ignore[attr-defined]
    monkeypatch.setattr(runner, "checkpoint_of", lambda tracker, run, device: (object(), run.checkpoint_sha256))
    seen = []
    monkeypatch.setattr(runner, "attack_and_log", lambda *a, **k: seen.append(_determinism()) or ({}, []))
    _nondeterministic_torch()
    result = runner.run_job(_smoke_job(), store, attacks=["pwws"])
    assert result.skipped and seen == [(False, True)]  # oneDNN off, deterministic algorithms on


def test_an_attack_run_on_its_own_applies_the_determinism_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import attacks.evaluation as evaluation

    seen = []

    def prepare(*args: Any, **kwargs: Any) -> Any:
        seen.append(_determinism())
        raise SuiteError("stop here")

    monkeypatch.setattr(evaluation, "prepare_attack", prepare)
    _nondeterministic_torch()
    with pytest.raises(SuiteError, match="stop here"):
        evaluation.run_attack("pwws", None, [], seed=1, cache_root=Path("unused"), checkpoint_sha256="ab" * 32,
                              attack_set_sha256="cd")
    assert seen == [(False, True)]


DETERMINISM_PROFILE = """\
name: determinism
version: 1
description: trec/CNN, every test example attacked with PWWS (determinism of a re-attack in a new process)
seeds: [0]
protocol: {split_seed: 2024, attack_set_seed: 2024, attack_set_size: 500}
train: {cpu_threads: 1}
datasets:
  trec: {scheme: flat, train_limit: 400, validation_limit: 100, test_limit: 500}
backbones:
  cnn: {epochs: 2, batch_size: 50, lr: 1.0e-3, optimizer: adam, schedule: constant, max_grad_norm: null}
defenses:
  finetune: {}
attacks: [pwws]
"""


def _cached_records(cache: Path) -> dict[str, dict[str, Any]]:
    files = list((cache / "attacks").glob("*/*.jsonl"))
    assert len(files) == 1, files
    lines = files[0].read_text(encoding="utf-8").splitlines()
    return {r["id"]: {k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, lines)}


@pytest.mark.slow
def test_re_attacking_in_a_new_process_gives_the_in_process_records(workdir: Path, resources: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10 item 4: before the fix, 3 of these 500 PWWS records differed ("WHO" vs "Who")."""
    import os
    import subprocess
    import sys

    from attacks.resources import wordnet_dict_dir

    if wordnet_dict_dir()[0] is None:
        pytest.skip("Debian WordNet absent: run scripts/install_wordnet.sh as root")
    profile = workdir / "determinism.yaml"
    profile.write_text(DETERMINISM_PROFILE, encoding="utf-8")
    monkeypatch.setenv("SUITE_CACHE_DIR", str(workdir / "cache-in-process"))
    assert main(["run", "--profile", str(profile), "--all"]) == 0
    capsys.readouterr()
    env = {**os.environ, "SUITE_CACHE_DIR": str(workdir / "cache-new-process"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "suite", "run", "--profile", str(profile), "--all"], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "training skipped" in done.stderr
    in_process, new_process = _cached_records(workdir / "cache-in-process"), _cached_records(workdir / "cache-new-process")
    assert len(in_process) == 500 and set(new_process) == set(in_process)
    assert [i for i in in_process if in_process[i] != new_process[i]] == []


# --- stores: unwritable / unreachable in seconds, artifacts beside the store -------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("where", ["parent is a file", "store is a folder"])
def test_an_unwritable_sqlite_store_fails_in_seconds(tmp_path: Path, workdir: Path, where: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import time

    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "a-folder.db").mkdir()
    db = tmp_path / "a-file" / "mlflow.db" if where == "parent is a file" else tmp_path / "a-folder.db"
    start = time.monotonic()
    code = main(["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "trec", "--backbone", "cnn",
                 "--no-attack", "--tracking-uri", f"sqlite:///{db}"])
    assert time.monotonic() - start < 10 and code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"suite: error: cannot write the MLflow tracking store sqlite:///{db}") and "--tracking-uri" in line


def test_collect_from_a_missing_store_says_so_and_creates_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    assert main(["leaderboard", "collect", "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "e")]) == 2
    assert "not found" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", ["run", "collect"])
def test_an_http_store_with_nothing_listening_fails_in_seconds(workdir: Path, command: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import time

    uri = f"http://127.0.0.1:{_free_port()}"
    args = (["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "trec", "--backbone", "cnn",
             "--no-attack", "--tracking-uri", uri] if command == "run"
            else ["leaderboard", "collect", "--tracking-uri", uri, "--out", str(workdir / "entries")])
    start = time.monotonic()
    code = main(args)
    assert time.monotonic() - start < 15 and code == 2
    assert _one_error_line(capsys.readouterr().err).startswith(f"suite: error: cannot open MLflow tracking store {uri}")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # only while opening: the run keeps MLflow's retries


@pytest.fixture(scope="module")
def away_store(tmp_path_factory: pytest.TempPathFactory):
    """A SQLite store in one folder, opened from another working directory (MLflow's migrations take seconds)."""
    root = tmp_path_factory.mktemp("reliability")
    (root / "store").mkdir()
    (root / "elsewhere").mkdir()
    mp = pytest.MonkeyPatch()
    mp.chdir(root / "elsewhere")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("SUITE_CACHE_DIR", str(root / "cache"))
    yield f"sqlite:///{root / 'store' / 'mlflow.db'}", root
    mp.undo()


def _tracker(away_store: Any, experiment: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from suite.run.tracking import Tracker

    uri, root = away_store
    monkeypatch.chdir(root / "elsewhere")
    monkeypatch.setenv("SUITE_CACHE_DIR", str(root / "cache"))
    return Tracker(uri, experiment=experiment)


def _trained(tracker: Any, config_hash: str, root: Path) -> str:
    """A FINISHED training run written through the run record (a fake checkpoint)."""
    from suite.core.records import RunRecord, training_metrics

    config = {"protocol_version": "1", "profile": "p", "profile_version": 1, "dataset": "trec", "split": {},
              "backbone": "cnn", "backbone_options": {}, "train": {}, "defense": "finetune", "defense_config": {},
              "seed": 0, "protocol": {}}
    record = RunRecord.new(config=config, config_hash=config_hash, data={}, data_sha256={}, backbone_facts={},
                           substitutions=[], environment={}, attack_set={"sha256": "as", "size": 2})
    with tracker.start_training(record, "finetune/trec/cnn/seed0") as run:
        run.log_metrics(training_metrics(clean_accuracy=75.0, best_epoch=1, best_validation_accuracy=70.0,
                                         mean_epoch_time_s=1.0))
        folder = root / f"ckpt-{config_hash}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        run.log_checkpoint(folder, "ck" * 32)
    return run.run_id


@pytest.mark.slow
def test_artifacts_live_beside_the_store_not_in_the_working_directory(away_store, monkeypatch) -> None:
    tracker = _tracker(away_store, "beside", monkeypatch)
    uri, root = away_store
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location == (root / "store" / "mlruns").as_uri()
    run_id = _trained(tracker, "hash-beside", root)
    assert list((root / "store" / "mlruns").rglob("model.safetensors"))
    assert not (root / "elsewhere" / "mlruns").exists()
    assert tracker.download_checkpoint(run_id).joinpath("model.safetensors").read_bytes() == b"weights"



# --- a full disk: one line, nothing finished undone --------------------------------------------------------

def _enospc(*args: Any, **kwargs: Any) -> None:
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fake_textattack(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack that fails every example at once (no TextAttack): only the cache path is real."""
    import types

    import attacks.evaluation as evaluation

    def result(text: Any) -> Any:
        out = types.SimpleNamespace(attacked_text=types.SimpleNamespace(text=text), output=0)
        return types.SimpleNamespace(num_queries=3, original_result=out, perturbed_result=out)

    attack = types.SimpleNamespace(attack=lambda text, label: result(text), __str__=lambda: "fake")
    spec = types.SimpleNamespace(name="pwws")
    monkeypatch.setattr(evaluation, "prepare_attack", lambda name, model, budget, batch, **_: (attack, spec, {"a": 1}))
    monkeypatch.setattr(evaluation, "_result_type", lambda r: "failed")


def test_a_full_disk_under_the_attack_cache_is_one_line_and_keeps_what_was_cached(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attacks.cache import AttackCache
    from suite.data.examples import Example
    from suite.run import attack_stage
    from suite.run.protocol import AttackSet

    _fake_textattack(monkeypatch)
    test = [Example(id=f"test/{i}", texts=(f"t{i}",), label=0) for i in range(4)]
    attack_set = AttackSet("trec", tuple(ex.id for ex in test), 2024, 4, 4)
    real_append, appended = AttackCache.append, []

    def append(self: AttackCache, record: dict[str, Any]) -> None:
        if len(appended) == 2:
            _enospc()
        appended.append(record["id"])
        real_append(self, record)

    monkeypatch.setattr(AttackCache, "append", append)
    tracker = _CheckpointStore(workdir)
    tracker.read = lambda run_id, artifacts=True: _finished("ab" * 32, run_id)  # type: ignore[attr-defined]
    tracker.log_attack = lambda parent, record: pytest.fail("a failed attack was logged")  # type: ignore[attr-defined]
    import types

    model = types.SimpleNamespace(eval=lambda: None)
    logged, errors = attack_stage.attack_and_log(tracker, "r1", model, test, attack_set, ["pwws"], "ab" * 32, 2024,
                                                 ["text"], "trec")
    assert logged == {} and len(errors) == 1
    assert errors[0].startswith("pwws: cannot append to the attack cache") and "No space left on device" in errors[0]
    assert "2 example(s) already cached are kept" in errors[0]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"suite: error: attack {errors[0]}"
    cached = list((workdir / "cache").rglob("*.jsonl"))
    assert len(cached) == 1 and [json.loads(x)["id"] for x in cached[0].read_text().splitlines()] == ["test/0", "test/1"]


@pytest.mark.slow
def test_a_full_disk_under_the_attack_artifacts_leaves_the_training_run_finished(
        away_store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attacks.registry import AttackSpec
    from suite.core import records
    from suite.core.records import read_run
    from suite.data.examples import Example
    from suite.run import attack_stage
    from suite.run.protocol import AttackSet

    tracker = _tracker(away_store, "disk-full", monkeypatch)
    run_id = _trained(tracker, "hash-full", away_store[1])
    monkeypatch.setattr(AttackSpec, "evaluate", lambda spec, model, examples, dataset: (
        {"accuracy": 40.0}, "kh1", {"settings": {"attack": spec.name}, "metrics": {}}, []))
    test = [Example(id=f"test/{i}", texts=(f"t{i}",), label=0) for i in range(2)]
    attack_set = AttackSet("trec", ("test/0", "test/1"), 2024, 2, 2)
    with monkeypatch.context() as m:
        m.setattr(tracker.mlflow, "log_dict", _enospc)  # the attack's summary artifact cannot be written
        logged, errors = attack_stage.attack_and_log(tracker, run_id, None, test, attack_set, ["k-pgd"], "ck", 2024,
                                                     ["text"], "trec")
    assert logged == {} and len(errors) == 1 and errors[0].startswith("k-pgd: no space left on device")
    assert len([line for line in capsys.readouterr().err.splitlines() if line.startswith("suite:")]) == 1
    client = tracker.client
    assert client.get_run(run_id).info.status == "FINISHED"
    children = client.search_runs([tracker.experiment_id], f"tags.`{records.PARENT_RUN_TAG}` = '{run_id}'")
    assert [c.info.status for c in children] == ["FAILED"]
    logged, errors = attack_stage.attack_and_log(tracker, run_id, None, test, attack_set, ["k-pgd"], "ck", 2024,
                                                 ["text"], "trec")  # space freed: the re-run logs it
    assert errors == [] and logged == {"k-pgd.accuracy": 40.0}
    assert read_run(client, run_id).attack_metrics("k-pgd") == {"accuracy": 40.0}


# --- an exception that is not a SuiteError fails its job, not the grid -------------------------------------

class _GridStore:
    tracking_uri, experiment = "fake://store", "suite-smoke"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("verbose", [False, True])
def test_an_unexpected_exception_fails_its_job_and_the_grid_goes_on(monkeypatch: pytest.MonkeyPatch, verbose: bool,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import suite.run.runner as runner
    import suite.run.tracking as tracking

    ran = []

    def run_job(job: Any, tracker: Any, **kwargs: Any) -> Any:
        ran.append(job.label)
        if len(ran) == 1:
            _enospc()
        if len(ran) == 2:
            raise RuntimeError("boom\nsecond line")
        return runner.JobResult(job, f"run{len(ran)}", "h", False, {"clean_accuracy": 50.0})

    monkeypatch.setattr(runner, "run_job", run_job)
    monkeypatch.setattr(tracking, "Tracker", _GridStore)
    code = main((["-v"] if verbose else []) + ["run", "--profile", "smoke", "--defense", "finetune", "--all",
                                               "--no-attack"])
    err = capsys.readouterr().err
    assert code == 1 and len(ran) == 6  # every job of the grid ran
    errors = [line for line in err.splitlines() if line.startswith("suite: error: ")]
    assert errors == [f"suite: error: {ran[0]}: no space left on device; free disk space and re-run (finished runs, "
                      "attacks and cached attack examples are kept)",
                      f"suite: error: {ran[1]}: unexpected RuntimeError: boom; re-run with -v for the traceback (the "
                      "job is recorded as failed; finished runs are kept)"]
    assert ("Traceback" in err) is verbose
    assert "2 job(s) failed" in err


# --- 5. a run left RUNNING by a killed process; 6. two identical processes ---------------------------------

CELL = ["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "trec", "--backbone", "cnn", "--no-attack"]


def _finished_training(client: Any) -> list[Any]:
    from conftest import training_runs

    return [r for r in training_runs(client, "suite-smoke") if r.info.status == "FINISHED"]


@pytest.mark.slow
def test_a_run_left_running_by_a_killed_process_is_marked_killed_and_the_job_trains_once(
        workdir: Path, resources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from suite.core import records
    from suite.data import load_protocol_splits
    from suite.run.runner import data_digests
    from suite.run.tracking import Tracker

    job = _smoke_job()
    config_hash = job.config_hash(data_digests(load_protocol_splits(job.dataset, job.split)))
    tracker = Tracker(None, experiment="suite-smoke")  # the default store, ./mlflow.db
    tags = {records.CONFIG_HASH: config_hash, records.KIND: records.KIND_TRAINING, records.DEFENSE: "finetune",
            records.DATASET: "trec", records.BACKBONE: "cnn", records.PROFILE: "smoke", records.SEED: "0"}
    stale = tracker.client.create_run(tracker.experiment_id, run_name=job.label, tags=tags)  # its process was killed
    child = tracker.client.create_run(tracker.experiment_id, run_name=f"{job.label}/pwws", tags={
        records.CONFIG_HASH: config_hash, records.KIND: records.KIND_ATTACK, records.ATTACK: "pwws",
        records.PARENT_RUN_TAG: stale.info.run_id})  # killed while logging an attack
    assert main(CELL) == 0
    err = capsys.readouterr().err
    notes = sorted(line for line in err.splitlines() if "left RUNNING" in line)
    assert notes == sorted(f"suite: note: run {run.info.run_id} ({name}) was left RUNNING by a process that is gone; "
                           "marked KILLED (it is not counted; the job's finished work is reused)"
                           for run, name in ((stale, job.label), (child, f"{job.label}/pwws")))
    client = tracker.client
    assert [client.get_run(r.info.run_id).info.status for r in (stale, child)] == ["KILLED", "KILLED"]
    finished = _finished_training(client)
    assert len(finished) == 1 and finished[0].data.tags[records.CONFIG_HASH] == config_hash
    assert main(CELL) == 0  # done: skipped, nothing new
    err = capsys.readouterr().err
    assert "training skipped" in err and "left RUNNING" not in err
    assert [r.info.run_id for r in _finished_training(client)] == [finished[0].info.run_id]


@pytest.mark.slow
def test_two_identical_processes_on_a_new_store_train_the_job_once(workdir: Path, resources: Path) -> None:
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-m", "suite", *CELL], cwd=workdir, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    errs = [err for _, err in outs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for e in errs]
    assert not any("duplicate column" in e or "Traceback" in e for e in errs)
    assert sorted("training skipped" in e for e in errs) == [False, True]  # one trained, the other reused it
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(_finished_training(client)) == 1


def test_a_full_disk_during_collect_leaves_every_entry_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "entries"
    shutil.copytree(FIXTURES / "entries", out)
    before = _snapshot(out)
    entries = [{**e, "seeds": [9]} for e in _entries()]
    _fake_collect(monkeypatch, entries)
    real_write, writes = Path.write_text, []

    def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        writes.append(self.name)
        if len(writes) == 2:  # the second entry: half of it reaches the disk, then the disk is full
            real_write(self, text[: len(text) // 2], *args, **kwargs)
            _enospc()
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    code = main(["leaderboard", "collect", "--tracking-uri", "sqlite:///unused.db", "--out", str(out)])
    monkeypatch.undo()
    line = _one_error_line(capsys.readouterr().err.split("\n", 1)[1])
    assert code == 2 and line.startswith(f"suite: error: cannot write the leaderboard entries in {out} (No space left")
    after = _snapshot(out)
    assert set(after) == set(before)  # no torn file, no temporary file left
    first = f"{entries[0]['id']}.json"
    assert json.loads(after[first])["seeds"] == [9]
    assert all(after[n] == before[n] for n in before if n != first)  # the rest: as they were, whole
