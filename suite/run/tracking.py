"""MLflow logging: one training run per (defense, dataset, backbone, seed), one child run per attack of it.

Default store: ``sqlite:///<cwd>/mlflow.db`` (embedded, no server); a SQLite store's new
experiments keep their artifacts beside the database, in ``<store folder>/mlruns``.
``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` point elsewhere. What a run logs, and the names it
logs it under, is ``suite.core.records``: each training run carries the job's config hash; a
FINISHED training run with the same hash means the job is done. Attacks are logged as nested runs
under the (already ended) training run, which is never reopened. File locks beside the store
(``suite.core.store``) keep two processes from training one job or migrating one new store at once.
"""
from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Mapping

from suite.core import records, store
from suite.core.errors import SuiteError
from suite.core.records import AttackRecord, DatasetInput, MlflowPayload, RunRecord, flatten_params
from suite.data.splits import ProtocolSplits

__all__ = ["Tracker", "RunLogger", "dataset_inputs", "flatten_params"]


def dataset_inputs(splits: ProtocolSplits) -> list[DatasetInput]:
    """The protocol's train / validation / test splits as MLflow dataset inputs.

    Each names the source split it was read from and its file's sha256 (the mirror's MANIFEST;
    none when read from the hub); a validation split carved from train has train's file and the
    carving rule.
    """
    from suite.data import DATASETS
    from suite.data.mirror import mirror_splits

    spec = DATASETS.get(splits.dataset)
    prov = splits.provenance
    digests = prov.get("sha256", {})
    train_split = spec.train_subset if prov.get("options", {}).get("use_train_subset") else spec.train
    files = {}
    if prov.get("mirror_dir"):
        try:
            files = {name: f.path.resolve().as_uri() for name, f in mirror_splits(Path(prov["mirror_dir"])).items()}
        except SuiteError:  # the splits were read from it a moment ago; a vanished manifest only loses the URIs
            files = {}
    hub = prov.get("hub") or {}
    hub_url = f"https://huggingface.co/datasets/{hub['repo_id']}" if hub.get("repo_id") else ""
    sources = {"train": (train_split, None), "test": (spec.test, None),
               "validation": (spec.validation, None) if spec.validation else (train_split, prov.get("validation_rule"))}
    out = []
    for split, examples in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        source_split, rule = sources[split]
        if source_split is None or not examples:
            continue
        out.append(DatasetInput(dataset=splits.dataset, split=split, digest=digests.get(source_split),
                                source=files.get(source_split) or hub_url or f"suite:{splits.dataset}/{source_split}",
                                rows=len(examples), source_split=source_split, rule=rule))
    return out


class Tracker:
    """An MLflow experiment of the store; created with the experiment kind that opens on its runs.

    Opening checks that a local store can be written and fails fast on an unreachable HTTP store
    (``suite.core.store``); a new experiment of a SQLite store keeps its artifacts beside the
    database (``<store folder>/mlruns``). Opening is serialised by the store lock (two processes
    creating one new SQLite store would otherwise both migrate it).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "suite") -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        self.tracking_uri = uri
        self.experiment = experiment
        store.check_writable(uri)
        self.locks = store.StoreLocks(uri)
        mlflow.set_tracking_uri(uri)
        with self.locks.store(), store.quick_connect(uri):
            try:
                self.client = MlflowClient(uri)
                exp = self.client.get_experiment_by_name(experiment)
                kind = {records.EXPERIMENT_KIND_TAG: records.EXPERIMENT_KIND}
                if exp is None:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=store.default_artifact_location(uri), tags=kind)
                else:
                    self.experiment_id = exp.experiment_id
                    if records.EXPERIMENT_KIND_TAG not in (exp.tags or {}):
                        self.client.set_experiment_tag(self.experiment_id, records.EXPERIMENT_KIND_TAG,
                                                       records.EXPERIMENT_KIND)
            except Exception as exc:
                raise SuiteError(f"cannot open MLflow tracking store {uri} ({exc.__class__.__name__}: "
                                 f"{_first_line(exc)}); check --tracking-uri") from None

    def job_lock(self, config_hash: str, label: str) -> AbstractContextManager[Path]:
        """Held while one job trains and is attacked; a second process running it waits (one line)."""
        return self.locks.job(config_hash, label)

    def close_stale(self, config_hash: str) -> list[str]:
        """Mark KILLED the runs of ``config_hash`` (training runs and their attack children) left
        RUNNING by a process that is gone; returns their ids. Call with :meth:`job_lock` held: no
        live suite process is then running the job, so a RUNNING run of it is stale. On a remote
        store (locks per machine, ``StoreLocks.shared`` False) they are only reported."""
        where = f"attributes.status = 'RUNNING' and tags.{records.CONFIG_HASH} = '{config_hash}'"
        stale = records.search_all(self.client, [self.experiment_id], where)
        for run in stale:
            name = run.info.run_name or run.info.run_id
            if self.locks.shared:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                print(f"suite: note: run {run.info.run_id} ({name}) was left RUNNING by a process that is gone; "
                      "marked KILLED (it is not counted; the job's finished work is reused)", file=sys.stderr)
            else:
                print(f"suite: note: run {run.info.run_id} ({name}) is RUNNING; on a remote store another machine "
                      "may be running it (not counted unless it finishes)", file=sys.stderr)
        return [run.info.run_id for run in stale] if self.locks.shared else []

    def find_finished(self, config_hash: str) -> RunRecord | None:
        """The latest FINISHED training run (not an attack child run) of ``config_hash``, with its attacks."""
        runs = self.client.search_runs([self.experiment_id], max_results=1,
                                       filter_string=records.finished_training_filter(config_hash))
        return records.read_run(self.client, runs[0].info.run_id, artifacts=False) if runs else None

    def read(self, run_id: str, attacks: Any = None, *, artifacts: bool = True) -> RunRecord:
        return records.read_run(self.client, run_id, attacks, artifacts=artifacts)

    def download_checkpoint(self, run_id: str) -> Path:
        """The local folder of training run ``run_id``'s ``checkpoint/`` artifact (a one-line error if unreadable)."""
        try:
            return Path(self.client.download_artifacts(run_id, records.CHECKPOINT_ARTIFACT))
        except Exception as exc:  # a store whose artifact folder moved or was deleted
            raise SuiteError(f"run {run_id}: cannot read its {records.CHECKPOINT_ARTIFACT}/ artifact "
                             f"({exc.__class__.__name__}: {_first_line(exc)}); re-run the job with --force") from None

    def start_training(self, record: RunRecord, run_name: str) -> "RunLogger":
        """Start the training run of ``record`` and log its tags, params, artifacts and dataset inputs."""
        payload = record.to_mlflow()
        run = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=payload.tags)
        logger = RunLogger(self.mlflow, run)
        try:
            logger.log_payload(payload, tags=False)
        except BaseException:
            logger.__exit__(Exception, None, None)
            raise
        return logger

    def log_attack(self, parent: RunRecord, attack: AttackRecord) -> str:
        """Log ``attack`` as a child run of the finished training run ``parent``; returns the child's id.

        The child ends FINISHED, or FAILED when logging raises (which then propagates); the parent
        is only read.
        """
        payload = attack.to_mlflow(parent)
        run = self.mlflow.start_run(experiment_id=parent.experiment_id or self.experiment_id,
                                    run_name=f"{parent.label}/{attack.attack}", parent_run_id=parent.run_id,
                                    tags=payload.tags)
        with RunLogger(self.mlflow, run) as logger:
            logger.log_payload(payload, tags=False)
        return logger.run_id


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0]


class RunLogger:
    """Thin wrapper over an active MLflow run; a failed job ends its run as FAILED."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow, self.run = mlflow, run
        self.run_id = run.info.run_id

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        interrupted = isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt)
        status = "FINISHED" if exc_type is None else "KILLED" if interrupted else "FAILED"
        self.mlflow.end_run(status=status)

    def log_payload(self, payload: MlflowPayload, tags: bool = True) -> None:
        if tags:
            self.set_tags(payload.tags)
        self.log_params(payload.params)
        if payload.metrics:
            self.log_metrics(payload.metrics)
        for path, obj in payload.json_artifacts.items():
            self.log_json(obj, path)
        for path, text in payload.text_artifacts.items():
            self.mlflow.log_text(text, path)
        if payload.inputs:
            logged = [i.to_mlflow() for i in payload.inputs]
            self.mlflow.log_inputs(datasets=[d for d, _, _ in logged], contexts=[c for _, c, _ in logged],
                                   tags_list=[t for _, _, t in logged])

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self.mlflow.log_params(dict(items[i:i + 100]))

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.mlflow.log_metric(name, float(value), step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.mlflow.log_dict(obj, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """``data`` as the run's artifact ``artifact_file`` (a path inside the run's artifacts)."""
        import tempfile

        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.mlflow.log_artifact(str(path), folder or None)

    def log_file(self, path: Path, artifact_path: str) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(folder), artifact_path)

    def log_checkpoint(self, folder: Path, sha256: str) -> None:
        """The trained model's files (``checkpoint/``) and their digest tag."""
        self.log_folder(folder, records.CHECKPOINT_ARTIFACT)
        self.set_tags(records.checkpoint_tags(sha256))
