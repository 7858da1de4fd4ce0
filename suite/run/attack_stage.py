"""After training: attack the model on the pinned attack set, each attack a child run of the training run."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from suite.core import records
from suite.core.errors import SuiteError
from suite.core.paths import attack_cache_root
from suite.core.records import AttackRecord, RunRecord
from suite.data.examples import Example
from suite.models.base import TextClassifier
from suite.run.protocol import AttackSet
from suite.run.tracking import Tracker

log = logging.getLogger(__name__)


def attack_and_log(tracker: Tracker, run_id: str, model: TextClassifier, test: Sequence[Example],
                   attack_set: AttackSet, attacks: Sequence[str], checkpoint_sha256: str, seed: int,
                   column_names: Sequence[str], dataset: str, query_budget: int | None = None) -> tuple[dict[str, float], list[str]]:
    """Run each attack; returns (its metrics ``<attack>.<key>``, one error line per attack that could not run).

    An attack that fails (e.g. a missing resource) is reported and the others still run; the
    training run ``run_id`` is only read. An attack whose configuration hash the run already
    carries (a finished child run) is not logged twice (its records come from the per-example cache).
    """
    parent = tracker.read(run_id, artifacts=False)
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
            if spec.native:  # k-PGD, AdvGLUE: evaluated by the spec itself
                metrics, attack_hash, summary, examples_out = spec.evaluate(model, examples, dataset)
            else:
                metrics, attack_hash, summary, examples_out = _textattack(
                    name, model, examples, seed, checkpoint_sha256, attack_set.sha256, query_budget, column_names)
        except SuiteError as exc:
            errors.append(f"{name}: {exc}")
            print(f"suite: error: attack {name}: {exc}", file=sys.stderr)
            continue
        record = AttackRecord(attack=name, attack_hash=attack_hash, variant=spec.variant,
                              substitutions=tuple(spec.substitutions), metrics=metrics, summary=summary,
                              examples=tuple(examples_out))
        logged.update(record.prefixed_metrics())
        if parent.attack_hash(name) != attack_hash:
            child_id = tracker.log_attack(parent, record)
            parent = parent.with_attack(dataclasses.replace(record, run_id=child_id, parent_run_id=parent.run_id))
        log.info("%s: %s", name, {k: round(v, 3) for k, v in record.prefixed_metrics().items()})
    return logged, errors


def _textattack(name: str, model: TextClassifier, examples: Sequence[Example], seed: int, checkpoint_sha256: str,
                attack_set_sha256: str, query_budget: int | None, column_names: Sequence[str]) -> tuple[Any, ...]:
    from attacks.evaluation import run_attack

    outcome = run_attack(name, model, examples, seed=seed, cache_root=attack_cache_root(),
                         checkpoint_sha256=checkpoint_sha256, attack_set_sha256=attack_set_sha256,
                         query_budget=query_budget, column_names=column_names)
    m = outcome.metrics
    seconds = sum(r["seconds"] for r in outcome.records)
    metrics = AttackRecord.textattack_metrics(aua=m.accuracy_under_attack, suc=m.attack_success_rate,
                                              queries=m.mean_queries, clean_attacked_set=m.attacked_clean_accuracy,
                                              n=m.n, attack_seconds=seconds)
    summary = {"settings": outcome.settings, "metrics": m.as_dict(), "attack_seconds": seconds,
               "resumed_from_cache": outcome.resumed}
    return metrics, outcome.attack_hash, summary, outcome.records


def checkpoint_of(tracker: Tracker, run: RunRecord, device: Any) -> tuple[TextClassifier, str]:
    """Load a finished run's checkpoint (for attacking a job that was skipped as done)."""
    from suite.models.loading import load_classifier

    sha = run.checkpoint_sha256
    if not sha:
        raise SuiteError(f"run {run.run_id} has no {records.CHECKPOINT_SHA256} tag; re-run the job with --force")
    folder = Path(tracker.mlflow.artifacts.download_artifacts(run_id=run.run_id,
                                                              artifact_path=records.CHECKPOINT_ARTIFACT))
    return load_classifier(folder, device), sha
