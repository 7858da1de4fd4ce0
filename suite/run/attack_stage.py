"""After training: attack the model on the pinned attack set and log to the job's MLflow run."""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from suite.data.examples import Example
from suite.core.errors import SuiteError
from suite.core.paths import attack_cache_root
from suite.models.base import TextClassifier
from suite.run.protocol import AttackSet
from suite.run.tracking import Tracker

log = logging.getLogger(__name__)


def attack_and_log(tracker: Tracker, run_id: str, model: TextClassifier, test: Sequence[Example],
                   attack_set: AttackSet, attacks: Sequence[str], checkpoint_sha256: str, seed: int,
                   column_names: Sequence[str], dataset: str, query_budget: int | None = None) -> tuple[dict[str, float], list[str]]:
    """Run each attack; returns (its metrics, one error line per attack that could not run).

    An attack that fails (e.g. a missing resource) is reported and the others still run; the
    training results already logged are untouched. An attack whose configuration hash the run
    already carries is not logged twice (its records come from the per-example cache).
    """
    tags = tracker.mlflow.get_run(run_id).data.tags
    from attacks import ATTACKS

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
            spec = ATTACKS.get(name)
            if spec.kind == "textattack":
                metrics, attack_hash, summary, records = _textattack(
                    name, model, examples, seed, checkpoint_sha256, attack_set.sha256, query_budget, column_names)
            else:
                metrics, attack_hash, summary, records = _native(spec, model, examples, dataset)
        except SuiteError as exc:
            errors.append(f"{name}: {exc}")
            print(f"suite: error: attack {name}: {exc}", file=sys.stderr)
            continue
        logged.update(metrics)
        if tags.get(f"attack.{name}.hash") == attack_hash:
            continue
        with tracker.resume(run_id) as run:
            run.log_metrics(metrics)
            run.set_tags({f"attack.{name}.variant": spec.variant, f"attack.{name}.hash": attack_hash,
                          f"attack.{name}.substitutions": "; ".join(spec.substitutions) or "none"})
            run.log_json(summary, f"attacks/{name}.json")
            if records:
                with tempfile.TemporaryDirectory(prefix="suite-attack-") as tmp:
                    path = Path(tmp) / f"{name}.jsonl"
                    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
                    run.log_file(path, "attacks")
        log.info("%s: %s", name, {k: round(v, 3) for k, v in metrics.items()})
    return logged, errors


def _textattack(name: str, model: TextClassifier, examples: Sequence[Example], seed: int, checkpoint_sha256: str,
                attack_set_sha256: str, query_budget: int | None, column_names: Sequence[str]) -> tuple[Any, ...]:
    from attacks.evaluation import run_attack

    outcome = run_attack(name, model, examples, seed=seed, cache_root=attack_cache_root(),
                         checkpoint_sha256=checkpoint_sha256, attack_set_sha256=attack_set_sha256,
                         query_budget=query_budget, column_names=column_names)
    m = outcome.metrics
    seconds = sum(r["seconds"] for r in outcome.records)
    metrics = {f"{name}.aua": m.accuracy_under_attack, f"{name}.suc": m.attack_success_rate,
               f"{name}.queries": m.mean_queries, f"{name}.clean_attacked_set": m.attacked_clean_accuracy,
               f"{name}.n": m.n, f"{name}.attack_seconds": seconds}
    summary = {"settings": outcome.settings, "metrics": m.as_dict(), "attack_seconds": seconds,
               "resumed_from_cache": outcome.resumed}
    return metrics, outcome.attack_hash, summary, outcome.records


def _native(spec: Any, model: TextClassifier, examples: Sequence[Example], dataset: str) -> tuple[Any, ...]:
    """k-PGD on the pinned attack set, or accuracy on the AdvGLUE set of ``dataset``."""
    from attacks.evaluation import attack_config_hash

    if spec.kind == "embedding":
        from attacks.embedding_pgd import KPGDSettings, kpgd_evaluate

        settings = KPGDSettings()
        result = kpgd_evaluate(model, examples, settings)
        record = {**spec.record(), "settings": settings.record()}
    else:
        from suite.data import DATASETS
        from suite.data.splits import load_test_split
        from suite.models.batching import accuracy

        static = [n for n, s in DATASETS.items() if dataset in s.static_eval_for]
        if not static:
            covered = sorted({d for _, s in DATASETS.items() for d in s.static_eval_for})
            raise SuiteError(f"{spec.name} has no adversarial set for dataset '{dataset}' (only for {', '.join(covered)})")
        test = load_test_split(static[0])
        result = {"accuracy": accuracy(model, test, 64, model.device), "n": len(test)}
        record = {**spec.record(), "evaluation_set": static[0]}
    metrics = {f"{spec.name}.{k}": float(v) for k, v in result.items()}
    return metrics, attack_config_hash(record), {"settings": record, "metrics": result}, []


def checkpoint_of(tracker: Tracker, run: Any, device: Any) -> tuple[TextClassifier, str]:
    """Load a finished run's checkpoint (for attacking a job that was skipped as done)."""
    from suite.models.loading import load_classifier

    sha = run.data.tags.get("checkpoint_sha256")
    if not sha:
        raise SuiteError(f"run {run.info.run_id} has no checkpoint_sha256 tag; re-run the job with --force")
    folder = Path(tracker.mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoint"))
    return load_classifier(folder, device), sha
