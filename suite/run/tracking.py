"""MLflow logging: one run per (defense, dataset, backbone, seed).

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlruns`` (embedded, no
server). ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` point elsewhere. Each run carries the
job's ``config_hash`` tag; a FINISHED run with the same hash means the job is done.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from suite.core.errors import SuiteError


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    _flatten("", config, out)
    return out


class Tracker:
    def __init__(self, tracking_uri: str | None = None, experiment: str = "suite") -> None:
        import mlflow

        self.mlflow = mlflow
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        self.tracking_uri = uri
        mlflow.set_tracking_uri(uri)
        self.experiment = experiment
        try:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                artifact_location = None
                if uri.startswith("sqlite:"):
                    artifact_location = (Path.cwd() / "mlruns").as_uri()
                self.experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as exc:
            raise SuiteError(f"cannot open MLflow tracking store {uri} ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check --tracking-uri") from exc

    def find_finished(self, config_hash: str) -> Any | None:
        runs = self.mlflow.search_runs(
            experiment_ids=[self.experiment_id],
            filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
            output_format="list", max_results=1,
        )
        return runs[0] if runs else None

    def resume(self, run_id: str) -> "RunLogger":
        return RunLogger(self.mlflow, self.mlflow.start_run(run_id=run_id))

    def start(self, run_name: str, tags: Mapping[str, str]) -> "RunLogger":
        run = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags))
        return RunLogger(self.mlflow, run)


class RunLogger:
    """Thin wrapper over an active MLflow run; a failed job ends its run as FAILED."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow, self.run = mlflow, run
        self.run_id = run.info.run_id

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")

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

    def log_file(self, path: Path, artifact_path: str) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(folder), artifact_path)
