"""After training: attack the model on the pinned attack set and log to the job's MLflow run."""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from suite.data.examples import Example
from suite.errors import SuiteError
from suite.models.base import TextClassifier
from suite.protocol import AttackSet
from suite.tracking import Tracker

log = logging.getLogger(__name__)


def attack_cache_root() -> Path:
    from attacks.resources import suite_cache_dir

    return suite_cache_dir() / "attacks"


def attack_and_log(tracker: Tracker, run_id: str, model: TextClassifier, test: Sequence[Example],
                   attack_set: AttackSet, attacks: Sequence[str], checkpoint_sha256: str, seed: int,
                   column_names: Sequence[str], query_budget: int | None = None) -> tuple[dict[str, float], list[str]]:
    """Run each attack; returns (its metrics, one error line per attack that could not run).

    An attack that fails (e.g. a missing resource) is reported and the others still run; the
    training results already logged are untouched. An attack whose configuration hash the run
    already carries is not logged twice (its records come from the per-example cache).
    """
    tags = tracker.mlflow.get_run(run_id).data.tags
    from attacks.evaluation import run_attack

    by_id = {ex.id: ex for ex in test}
    missing = [i for i in attack_set.ids if i not in by_id]
    if missing:
        raise SuiteError(f"{len(missing)} attack-set ids (e.g. {missing[0]}) are not in the test split; "
                         "the test split changed since the attack set was pinned")
    examples = [by_id[i] for i in attack_set.ids]
    logged: dict[str, float] = {}
    errors: list[str] = []
    for name in attacks:
        try:
            outcome = run_attack(name, model, examples, seed=seed, cache_root=attack_cache_root(),
                                 checkpoint_sha256=checkpoint_sha256, attack_set_sha256=attack_set.sha256,
                                 query_budget=query_budget, column_names=column_names)
        except SuiteError as exc:
            errors.append(f"{name}: {exc}")
            print(f"suite: error: attack {name}: {exc}", file=sys.stderr)
            continue
        m = outcome.metrics
        seconds = sum(r["seconds"] for r in outcome.records)
        metrics = {f"{name}.aua": m.accuracy_under_attack, f"{name}.suc": m.attack_success_rate,
                   f"{name}.queries": m.mean_queries, f"{name}.clean_attacked_set": m.attacked_clean_accuracy,
                   f"{name}.n": m.n, f"{name}.attack_seconds": seconds}
        logged.update(metrics)
        if tags.get(f"attack.{name}.hash") == outcome.attack_hash:
            continue
        with tracker.resume(run_id) as run:
            run.log_metrics(metrics)
            run.set_tags({f"attack.{name}.variant": outcome.spec.variant, f"attack.{name}.hash": outcome.attack_hash,
                          f"attack.{name}.substitutions": "; ".join(outcome.spec.substitutions) or "none"})
            run.log_json({"settings": outcome.settings, "metrics": m.as_dict(), "attack_seconds": seconds,
                          "resumed_from_cache": outcome.resumed}, f"attacks/{name}.json")
            with tempfile.TemporaryDirectory(prefix="suite-attack-") as tmp:
                path = Path(tmp) / f"{name}.jsonl"
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome.records), encoding="utf-8")
                run.log_file(path, "attacks")
        log.info("%s: %s", name, {k: round(v, 2) for k, v in metrics.items()})
    return logged, errors


def checkpoint_of(tracker: Tracker, run: Any, device: Any) -> tuple[TextClassifier, str]:
    """Load a finished run's checkpoint (for attacking a job that was skipped as done)."""
    from suite.models.loading import load_classifier

    sha = run.data.tags.get("checkpoint_sha256")
    if not sha:
        raise SuiteError(f"run {run.info.run_id} has no checkpoint_sha256 tag; re-run the job with --force")
    folder = Path(tracker.mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoint"))
    return load_classifier(folder, device), sha
