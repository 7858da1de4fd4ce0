"""Attacking a trained model on the protocol's pinned attack set.

Each example is attacked with its own seed, derived from (protocol seed, example id), so the
outcome of an example does not depend on which examples ran before it: a resumed attack gives
the same records, and so the same metrics, as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from attacks.cache import AttackCache
from attacks.metrics import RobustnessMetrics, robustness_metrics
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


def prepare_attack(name: str, model: TextClassifier, query_budget: int | None = None,
                   batch_size: int = 64) -> tuple[Any, AttackSpec, dict[str, Any]]:
    """Build attack ``name`` against ``model``: (TextAttack ``Attack``, its spec, the settings every
    record of it depends on). Missing resources fail here, in one line, before TextAttack loads."""
    from attacks.recipes import build_attack
    from attacks.resources import prepare_textattack_env, require

    require(ATTACKS.get(name).requires)
    prepare_textattack_env()
    from attacks.wrappers import SuiteModelWrapper

    wrapper = SuiteModelWrapper(model, batch_size=batch_size)
    attack, spec = build_attack(name, wrapper, query_budget)
    settings = {**spec.record(), "query_budget": query_budget or "unlimited"}
    return attack, spec, settings


def attack_examples(attack: Any, model: TextClassifier, examples: Sequence[Example], cache: AttackCache, *,
                    seed: int, column_names: Sequence[str] = ("text_a", "text_b"), desc: str = "attack",
                    stop_after: int | None = None,
                    on_record: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Attack the ``examples`` that ``cache`` does not hold yet, each with its own seed
    (:func:`example_seed`), appending every record to the cache as soon as it is done.

    Returns (records by example id, cached and new; how many of ``examples`` came from the
    cache). ``stop_after`` attacks at most that many new examples (used to test resumption).
    Leaves ``model`` in eval mode and the global RNGs re-seeded by the last example attacked.
    """
    done = cache.load()
    resumed = sum(ex.id in done for ex in examples)
    new = 0
    model.eval()
    for example in tqdm(examples, desc=desc, leave=False):
        if example.id in done:
            continue
        if stop_after is not None and new >= stop_after:
            break
        s = example_seed(seed, example.id)
        random.seed(s)
        np.random.seed(s % (2**32))
        torch.manual_seed(s)
        start = time.perf_counter()
        result = attack.attack(_example_input(example, column_names), example.label)
        record = {
            "id": example.id, "label": example.label, "result": _result_type(result),
            "queries": int(result.num_queries), "seconds": round(time.perf_counter() - start, 4),
            "original": list(example.texts), "perturbed": result.perturbed_result.attacked_text.text,
            "original_prediction": int(result.original_result.output),
            "perturbed_prediction": int(result.perturbed_result.output),
        }
        try:
            cache.append(record)
        except OSError as exc:  # a full disk: one line; the examples cached so far are kept for the re-run
            raise SuiteError(f"cannot append to the attack cache {cache.path} ({exc.strerror or exc}); free disk "
                             f"space or make it writable and re-run ({len(done)} example(s) already cached are "
                             "kept)") from None
        done[example.id] = record
        new += 1
        if on_record:
            on_record(record)
    return done, resumed


def run_attack(name: str, model: TextClassifier, examples: Sequence[Example], *, seed: int, cache_root: Path,
               checkpoint_sha256: str, attack_set_sha256: str, query_budget: int | None = None,
               column_names: Sequence[str] = ("text_a", "text_b"), batch_size: int = 64,
               stop_after: int | None = None, on_record: Callable[[dict[str, Any]], None] | None = None) -> AttackOutcome:
    """Attack ``examples`` (the pinned attack set, in order), resuming from the cache.

    ``stop_after`` attacks at most that many new examples (used to test resumption). Runs under
    the protocol's determinism settings (``suite.core.seeding.deterministic_mode``), so a resumed
    attack in a new process gives the same records as an uninterrupted one.
    """
    deterministic_mode()
    attack, spec, settings = prepare_attack(name, model, query_budget, batch_size)
    settings = {**settings, "seed": seed, "attack_set_sha256": attack_set_sha256, "textattack_attack": str(attack)}
    attack_hash = attack_config_hash(settings)
    cache = AttackCache(cache_root, checkpoint_sha256, attack_hash)
    done, resumed = attack_examples(attack, model, examples, cache, seed=seed, column_names=column_names,
                                    desc=f"attack {name}", stop_after=stop_after, on_record=on_record)
    records = [done[ex.id] for ex in examples if ex.id in done]
    return AttackOutcome(spec, attack_hash, records, robustness_metrics(records), resumed, settings)
