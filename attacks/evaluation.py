"""Attacking a trained model on the protocol's pinned attack set.

Each example is attacked with its own seed, derived from (protocol seed, example id), so the
outcome of an example does not depend on which examples ran before it, nor on which process
attacks it: a resumed attack gives the same records, and so the same metrics, as an
uninterrupted one, and ``run_attack(..., workers=N)`` (:mod:`attacks.parallel`) gives the same
records for every N.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from attacks.cache import AttackCache
from attacks.engine import ENGINE_NAME, ENGINE_VERSION, ENGINES, engine_attack
from attacks.metrics import RobustnessMetrics, robustness_metrics
from attacks.parallel import WorkerJob, attack_in_workers
from attacks.registry import ATTACKS, AttackSpec
from suite.core.errors import SuiteError
from suite.core.seeding import deterministic_mode
from suite.data.examples import Example
from suite.models.base import TextClassifier


@dataclass
class AttackOutcome:
    spec: AttackSpec
    attack_hash: str
    records: list[dict[str, Any]]
    metrics: RobustnessMetrics
    resumed: int  # examples taken from the cache
    settings: dict[str, Any]


def example_seed(seed: int, example_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()[:8], 16)


def attack_config_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _result_type(result: Any) -> str:
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

    if isinstance(result, SuccessfulAttackResult):
        return "successful"
    if isinstance(result, SkippedAttackResult):
        return "skipped"
    if isinstance(result, FailedAttackResult):
        return "failed"
    raise TypeError(f"unexpected attack result {type(result).__name__}")


def _example_input(example: Example, column_names: Sequence[str]) -> Any:
    if len(example.texts) == 1:
        return example.texts[0]
    return OrderedDict(zip(column_names, example.texts))


_NOTED: set[str] = set()  # engine notes already printed by this process


def stock_engine() -> dict[str, Any]:
    """The ``settings["engine"]`` of an attack run by stock TextAttack."""
    return {"name": "textattack", "version": importlib.metadata.version("textattack")}


def prepare_attack(name: str, model: TextClassifier, query_budget: int | None = None, batch_size: int | None = None,
                   engine: str = "fast", *, announce: bool = True) -> tuple[Any, AttackSpec, dict[str, Any]]:
    """Build attack ``name`` against ``model``: (attacker, its spec, the settings every record of
    it depends on). Missing resources fail here, in one line, before TextAttack loads.

    ``engine``: ``"fast"`` runs the attack on the suite's engine (:mod:`attacks.engine`) where
    it covers the attack, else on stock TextAttack after printing the engine's one-line reason
    to stderr (once per process; ``announce=False``: not at all, as in the worker processes);
    ``"textattack"`` always runs stock TextAttack. The engine actually used is recorded in
    ``settings["engine"]``, so records of different engines never share a cache.
    """
    if engine not in ENGINES:
        raise SuiteError(f"unknown attack engine {engine!r}; use one of: {', '.join(ENGINES)}")
    from attacks.recipes import build_attack
    from attacks.resources import prepare_textattack_env, require

    require(ATTACKS.get(name).requires)
    prepare_textattack_env()
    from attacks.wrappers import SuiteModelWrapper

    wrapper = SuiteModelWrapper(model, batch_size=batch_size)
    attack, spec = build_attack(name, wrapper, query_budget)
    attacker, used = attack, stock_engine()
    if engine == "fast":
        attacker, note = engine_attack(attack, spec)
        if note is None:
            used = {"name": ENGINE_NAME, "version": ENGINE_VERSION}
        elif announce and note not in _NOTED:
            _NOTED.add(note)
            print(f"suite: note: {note}", file=sys.stderr)
    # the chunk size decides the last bits of every score (attacks.wrappers): part of the hash
    settings = {**spec.record(), "query_budget": query_budget or "unlimited", "engine": used,
                "score_batch": wrapper.batch_size}
    return attacker, spec, settings


def attack_example(attack: Any, example: Example, *, seed: int,
                   column_names: Sequence[str] = ("text_a", "text_b")) -> dict[str, Any]:
    """Attack one example from its own seed (:func:`example_seed`); its record for the cache.

    Re-seeds the global python, numpy and torch RNGs first, so the record does not depend on what
    this process attacked before (the same in one process, a resumed run, or a worker process).
    """
    s = example_seed(seed, example.id)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    start = time.perf_counter()
    result = attack.attack(_example_input(example, column_names), example.label)
    return {
        "id": example.id, "label": example.label, "result": _result_type(result),
        "queries": int(result.num_queries), "seconds": round(time.perf_counter() - start, 4),
        "original": list(example.texts), "perturbed": result.perturbed_result.attacked_text.text,
        "original_prediction": int(result.original_result.output),
        "perturbed_prediction": int(result.perturbed_result.output),
    }


def _keeper(cache: AttackCache, done: dict[str, dict[str, Any]],
            on_record: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
    """What happens to each finished record: appended to ``cache`` (flushed at once), added to
    ``done``, passed to ``on_record``. A failed append is one line; what is cached stays."""
    def keep(record: dict[str, Any]) -> None:
        try:
            cache.append(record)
        except OSError as exc:  # a full disk: one line; the examples cached so far are kept for the re-run
            raise SuiteError(f"cannot append to the attack cache {cache.path} ({exc.strerror or exc}); free disk "
                             f"space or make it writable and re-run ({len(done)} example(s) already cached are "
                             "kept)") from None
        done[record["id"]] = record
        if on_record:
            on_record(record)
    return keep


def _pending(examples: Sequence[Example], done: dict[str, dict[str, Any]], stop_after: int | None) -> list[Example]:
    """The examples still to attack, in order (at most ``stop_after`` of them)."""
    todo = [ex for ex in examples if ex.id not in done]
    return todo if stop_after is None else todo[:max(stop_after, 0)]


def attack_examples(attack: Any, model: TextClassifier, examples: Sequence[Example], cache: AttackCache, *,
                    seed: int, column_names: Sequence[str] = ("text_a", "text_b"), desc: str = "attack",
                    stop_after: int | None = None,
                    on_record: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Attack the ``examples`` that ``cache`` does not hold yet, in this process, each with its own
    seed (:func:`attack_example`), appending every record to the cache as soon as it is done.

    Returns (records by example id, cached and new; how many of ``examples`` came from the
    cache). ``stop_after`` attacks at most that many new examples (used to test resumption).
    Leaves ``model`` in eval mode and the global RNGs re-seeded by the last example attacked.
    """
    done = cache.load()
    resumed = sum(ex.id in done for ex in examples)
    keep = _keeper(cache, done, on_record)
    model.eval()
    for example in tqdm(_pending(examples, done, stop_after), desc=desc, leave=False):
        keep(attack_example(attack, example, seed=seed, column_names=column_names))
    return done, resumed


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SuiteError(f"workers must be a whole number >= 1, got {workers!r}; pass 1 (attack in this process) "
                         "or more (that many worker processes)")
    return workers


def worker_job(name: str, attack: Any, settings: dict[str, Any], *, engine: str, query_budget: int | None,
               batch_size: int | None, seed: int, column_names: Sequence[str]) -> WorkerJob:
    """What a worker process needs to rebuild ``attack`` (built by :func:`prepare_attack` with these
    arguments; ``settings``: its settings) and attack examples as this process would."""
    return WorkerJob(attack=name, engine=engine, query_budget=query_budget, batch_size=batch_size, seed=seed,
                     column_names=tuple(column_names), description=str(attack), settings=settings)


def run_attack(name: str, model: TextClassifier, examples: Sequence[Example], *, seed: int, cache_root: Path,
               checkpoint_sha256: str, attack_set_sha256: str, query_budget: int | None = None,
               column_names: Sequence[str] = ("text_a", "text_b"), batch_size: int | None = None,
               stop_after: int | None = None, on_record: Callable[[dict[str, Any]], None] | None = None,
               engine: str = "fast", workers: int = 1) -> AttackOutcome:
    """Attack ``examples`` (the pinned attack set, in order), resuming from the cache.

    ``stop_after`` attacks at most that many new examples (used to test resumption). Runs under
    the protocol's determinism settings (``suite.core.seeding.deterministic_mode``), so a resumed
    attack in a new process gives the same records as an uninterrupted one. ``engine``: see
    :func:`prepare_attack`. ``workers`` > 1 attacks the uncached examples in that many worker
    processes (:func:`attacks.parallel.attack_in_workers`: at most one per example, started only
    when the attack would take this process longer than ``attacks.parallel.START_AFTER_S``; it
    attacks the first examples itself), all at one torch thread; ``workers`` is not part of the
    settings: the records, the cache and the attack hash are the same for any N > 1, and for
    N = 1 when this process runs at one torch thread (as the profiles pin it).
    """
    workers = _check_workers(workers)
    deterministic_mode()
    attack, spec, settings = prepare_attack(name, model, query_budget, batch_size, engine=engine)
    settings = {**settings, "seed": seed, "attack_set_sha256": attack_set_sha256, "textattack_attack": str(attack)}
    attack_hash = attack_config_hash(settings)
    cache = AttackCache(cache_root, checkpoint_sha256, attack_hash)
    desc = f"attack {name}"
    if workers == 1:
        done, resumed = attack_examples(attack, model, examples, cache, seed=seed, column_names=column_names,
                                        desc=desc, stop_after=stop_after, on_record=on_record)
    else:
        done = cache.load()
        resumed = sum(ex.id in done for ex in examples)
        todo = _pending(examples, done, stop_after)
        if todo:
            model.eval()
            job = worker_job(name, attack, settings, engine=engine, query_budget=query_budget,
                             batch_size=settings["score_batch"],
                             seed=seed, column_names=column_names)
            attack_in_workers(job, model, todo, workers=workers, keep=_keeper(cache, done, on_record), desc=desc,
                              cache_path=cache.path, cached_before=len(done),
                              local=lambda ex: attack_example(attack, ex, seed=seed, column_names=column_names))
    records = [done[ex.id] for ex in examples if ex.id in done]
    return AttackOutcome(spec, attack_hash, records, robustness_metrics(records), resumed, settings)
