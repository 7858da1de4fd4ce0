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
from suite.core.seeding import deterministic_mode
from suite.data.examples import Example
from suite.models.base import TextClassifier
from suite.run.config import InterpretationConfig
from suite.run.failures import failure_line
from suite.run.protocol import AttackSet
from suite.run.tracking import Tracker

log = logging.getLogger(__name__)


def attack_and_log(tracker: Tracker, run_id: str, model: TextClassifier, test: Sequence[Example],
                   attack_set: AttackSet, attacks: Sequence[str], checkpoint_sha256: str, seed: int,
                   column_names: Sequence[str], dataset: str, query_budget: int | None = None, *,
                   workers: int = 1, engine: str = "fast",
                   interpretation: InterpretationConfig | None = None) -> tuple[dict[str, float], list[str]]:
    """Run each attack; returns (its metrics ``<attack>.<key>``, one error line per attack that could not run).

    TextAttack-kind attacks run on ``engine`` ("fast": the suite's engine, "textattack": stock)
    in ``workers`` processes (``attacks.evaluation.run_attack``); native ones (k-PGD, AdvGLUE)
    are evaluated by their spec, in this process. With ``interpretation`` enabled for an attack,
    the consistency of the attacked pairs' interpretations (FLAT §5.2) is measured from its records
    and logged with it (:func:`interpretation_metrics`); its settings then join the attack's
    settings and hash (not the per-example cache's key: the records are the same).

    An attack that fails (e.g. a missing resource) is reported and the others still run; the
    training run ``run_id`` is only read. An attack whose configuration hash the run already
    carries (a finished child run) is not logged twice (its records come from the per-example cache).
    """
    from attacks import ATTACKS

    deterministic_mode()  # the same records in a new process (a skipped job, a resumed attack) as in-process
    parent = tracker.read(run_id, artifacts=False)

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
                    name, model, examples, seed, checkpoint_sha256, attack_set.sha256, query_budget, column_names,
                    workers=workers, engine=engine)
                if interpretation is not None and interpretation.applies(name):
                    from attacks.evaluation import attack_config_hash

                    settings = {**summary["settings"], "interpretation": dataclasses.asdict(interpretation)}
                    summary = {**summary, "settings": settings}
                    attack_hash = attack_config_hash(settings)  # the records' cache keeps its own key
                    if parent.attack_hash(name) == attack_hash:
                        metrics = dict(parent.attack_metrics(name))  # measured and logged before
                    else:
                        metrics = {**metrics, **interpretation_metrics(model, examples_out, interpretation, seed)}
        except Exception as exc:  # a SuiteError, a full disk under the attack cache, a bug: the next attack runs
            _attack_failed(name, exc, errors)
            continue
        record = AttackRecord(attack=name, attack_hash=attack_hash, variant=spec.variant,
                              substitutions=tuple(spec.substitutions), metrics=metrics, summary=summary,
                              examples=tuple(examples_out))
        if parent.attack_hash(name) != attack_hash:
            try:  # its child run ends FAILED; the training run is untouched
                child_id = tracker.log_attack(parent, record)
            except Exception as exc:
                _attack_failed(name, exc, errors)
                continue
            parent = parent.with_attack(dataclasses.replace(record, run_id=child_id, parent_run_id=parent.run_id))
        logged.update(record.prefixed_metrics())
        log.info("%s: %s", name, {k: round(v, 3) for k, v in record.prefixed_metrics().items()})
    return logged, errors


def interpretation_metrics(model: TextClassifier, examples: Sequence[dict[str, Any]],
                           interpretation: InterpretationConfig, seed: int) -> dict[str, float]:
    """Kendall's tau and top-k intersection of each method's word attributions on the attack's
    original / adversarial pairs (``attacks.interpretation.consistency``), as attack-run metric keys."""
    from attacks.interpretation import consistency

    out: dict[str, float] = {}
    for method in interpretation.methods:
        values = consistency(model, examples, method=method, k=interpretation.k,
                             max_pairs=interpretation.lime_pairs if method == "lime" else None, seed=seed,
                             n_steps=interpretation.ig_steps, lime_samples=interpretation.lime_samples)
        out.update({records.interpretation_metric(key, method): float(value) for key, value in values.items()})
        log.info("%s consistency: %s", method, {k: round(float(v), 4) for k, v in values.items()})
    return out


def _attack_failed(name: str, exc: Exception, errors: list[str]) -> None:
    """Report attack ``name``'s failure in one line (``-v``: with its traceback) and record it."""
    line = failure_line(exc)
    errors.append(f"{name}: {line}")
    print(f"suite: error: attack {name}: {line}", file=sys.stderr)
    if not isinstance(exc, SuiteError):
        log.info("attack %s failed", name, exc_info=exc)


def _textattack(name: str, model: TextClassifier, examples: Sequence[Example], seed: int, checkpoint_sha256: str,
                attack_set_sha256: str, query_budget: int | None, column_names: Sequence[str], *,
                workers: int = 1, engine: str = "fast") -> tuple[Any, ...]:
    from attacks.evaluation import run_attack

    outcome = run_attack(name, model, examples, seed=seed, cache_root=attack_cache_root(),
                         checkpoint_sha256=checkpoint_sha256, attack_set_sha256=attack_set_sha256,
                         query_budget=query_budget, column_names=column_names, engine=engine, workers=workers)
    m = outcome.metrics
    seconds = sum(r["seconds"] for r in outcome.records)
    metrics = AttackRecord.textattack_metrics(aua=m.accuracy_under_attack, suc=m.attack_success_rate,
                                              queries=m.mean_queries, clean_attacked_set=m.attacked_clean_accuracy,
                                              n=m.n, attack_seconds=seconds)
    summary = {"settings": outcome.settings, "metrics": m.as_dict(), "attack_seconds": seconds,
               "resumed_from_cache": outcome.resumed}
    return metrics, outcome.attack_hash, summary, outcome.records


def checkpoint_of(tracker: Tracker, run: RunRecord, device: Any) -> tuple[TextClassifier, str]:
    """Load a finished run's checkpoint (for attacking a job that was skipped as done), verified
    against the run's ``checkpoint_sha256`` tag first: a corrupted or truncated checkpoint is a
    one-line error, so nothing is attacked or cached under the recorded digest with other weights."""
    from suite.models.loading import load_classifier

    sha = run.checkpoint_sha256
    if not sha:
        raise SuiteError(f"run {run.run_id} has no {records.CHECKPOINT_SHA256} tag; re-run the job with --force")
    folder = tracker.download_checkpoint(run.run_id)
    fix = f"re-run the job with --force (run {run.run_id}'s checkpoint cannot be trusted)"
    return load_classifier(folder, device, sha256=sha, fix=fix), sha
