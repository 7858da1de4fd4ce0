"""Attacking the model *during training* (adversarial data augmentation, attack-based defenses).

``generate`` runs a registered TextAttack attack on training examples with the evaluation path's
machinery (``attacks.evaluation``: one seed per example from ``example_seed``, a per-example JSONL
cache), keyed by the exact weights being attacked: the cache file is per (sha256 of the model's
``state_dict``, attack configuration hash), one line per example id. A training run that is
killed and restarted reaches the same weights (training is deterministic) and so finds the
examples already attacked in the cache; only the rest are attacked.

Unlike the evaluation path, ``generate`` leaves the caller's state as it found it: the model's
train/eval mode and the global python, numpy and torch RNG states (the per-example reseeding of
the attack would otherwise change the dropout masks of the training steps that follow, and a
resumed run, which skips the cached examples, would then train differently from an
uninterrupted one).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from attacks.cache import AttackCache
from attacks.evaluation import attack_config_hash, attack_examples, prepare_attack
from suite.core.seeding import deterministic_mode
from suite.data.examples import Example
from suite.models.base import TextClassifier, state_sha256

PURPOSE = "training"  # recorded in the settings: training-time caches never mix with evaluation ones


def generate(model: TextClassifier, examples: Sequence[Example], attack: str, *, seed: int, cache_root: Path,
             model_state_sha256: str | None = None, query_budget: int | None = None,
             column_names: Sequence[str] = ("text_a", "text_b"), batch_size: int | None = None,
             stop_after: int | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Attack ``examples`` with attack ``attack`` (a name in ``attacks.ATTACKS``); one record per
    example, in order (the evaluation records: ``result``, ``perturbed``, predictions, queries...).

    ``model_state_sha256`` names the weights for the cache (default: :func:`state_sha256` of
    ``model`` now). ``stop_after`` attacks at most that many new examples and returns the
    records done so far (used to test resumption).
    """
    deterministic_mode()  # as the training run set it; also when called on its own
    sha = model_state_sha256 or state_sha256(model)
    was_training = model.training
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            runner, _, settings = prepare_attack(attack, model, query_budget, batch_size)
            settings = {**settings, "seed": seed, "use": PURPOSE, "textattack_attack": str(runner)}
            cache = AttackCache(cache_root, sha, attack_config_hash(settings))
            done, _ = attack_examples(runner, model, examples, cache, seed=seed, column_names=column_names,
                                      desc=f"training attack {attack}", stop_after=stop_after, on_record=on_record)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            model.train(was_training)
    return [done[ex.id] for ex in examples if ex.id in done]
