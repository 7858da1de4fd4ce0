"""Stock ``UntargetedClassification`` bookkeeping without its per-text objects.

What a record depends on is reproduced exactly:

* **queries**: every text handed to ``get_results`` counts, cached or not; a query budget
  truncates the list first and ends the search when it is reached (``GoalFunction.get_results``);
* **scores**, in one of two schedules:

  - ``merged`` (when :mod:`attacks.engine.invariance` found the victim's scores independent of
    batching on this machine): texts of many search steps are scored in one model call
    (:meth:`GoalEmulator.prefetch`) and each text once per example; the softmax is applied
    per row as stock applies it, and an example whose logits already sum to 1 (stock would
    then skip the softmax for the whole call) is handed back to stock TextAttack;
  - ``stock-calls`` otherwise: the model is called on exactly stock's batches — the texts of
    one ``get_results`` call that the per-example cache does not hold (duplicates included),
    in chunks of the goal function's ``batch_size`` — through the goal function's own
    ``_process_model_outputs``, so scores are bit-identical to stock's even when the logits
    depend on the batch;

* **the cache** (``stock-calls``) is keyed like stock's LRU of ``AttackedText``: the text and
  the number of ``attack_attrs`` (``AttackedText.__eq__``); it lives for one example.

A result is ``Scored(text, n_attrs, output, score, succeeded)``; ``score`` is the float32
``1 - p(ground truth)`` stock's ``_get_score`` computes (as a ``numpy.float32``, not a 0-d
tensor: the same value, the same ``>``, sort order, ``np.array`` and ``np.max`` dtype), computed
for a whole call at once.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch


class Scored(NamedTuple):
    text: str
    n_attrs: int
    output: torch.Tensor  # the processed model output row (probabilities)
    score: np.float32  # 1 - p(ground truth), float32 as in stock
    succeeded: bool
    payload: Any = None  # the stock AttackedText a candidate came from, when it was built
    word: str = ""  # the new word of a swap candidate


class _Row(NamedTuple):
    output: torch.Tensor
    score: np.float32
    succeeded: bool


class Candidate(NamedTuple):
    text: str
    n_attrs: int
    payload: Any = None
    word: str = ""


class GoalEmulator:
    """One example's goal-function state: queries, cache, ground truth."""

    def __init__(self, goal_function: Any, ground_truth: int, merged: bool) -> None:
        self.goal_function = goal_function
        self.merged = merged
        self.model = goal_function.model
        self.batch_size = goal_function.batch_size
        self.query_budget = goal_function.query_budget
        self.ground_truth = ground_truth
        self.num_queries = 0
        self._cache: dict[tuple[str, int], _Row] = {}  # stock-calls schedule
        self._scores: dict[str, _Row] = {}  # merged schedule
        self.model_calls = 0

    def prefetch(self, texts: Sequence[str]) -> None:
        """Score in one call the ``texts`` the merged schedule has not scored yet (no-op otherwise)."""
        if not self.merged:
            return
        missing = list(dict.fromkeys(t for t in texts if t not in self._scores))
        if not missing:
            return
        logits = self.model(missing)
        self.model_calls += 1
        self._scores.update(zip(missing, self._rows(process_rows(logits))))

    def _rows(self, probs: torch.Tensor) -> list["_Row"]:
        """(output row, score, succeeded) per row: ``1 - row[gt]`` and ``row.argmax() != gt`` for all at once."""
        gt = self.ground_truth
        scores = (1 - probs[:, gt]).numpy()
        succeeded = (probs.argmax(dim=1) != gt).tolist()
        return [_Row(probs[i], scores[i], succeeded[i]) for i in range(probs.shape[0])]

    def get_results(self, candidates: Sequence[Candidate]) -> tuple[list[Scored], bool]:
        """``GoalFunction.get_results`` (without ``check_skip``): (results, search over)."""
        if self.query_budget < float("inf"):
            candidates = candidates[: max(0, int(self.query_budget - self.num_queries))]
        self.num_queries += len(candidates)
        if self.merged:
            self.prefetch([c.text for c in candidates])
            rows = [self._scores[c.text] for c in candidates]
        else:
            uncached = [c for c in candidates if (c.text, c.n_attrs) not in self._cache]
            if uncached:
                outputs = self._rows(self._call_model([c.text for c in uncached]))
                for c, row in zip(uncached, outputs):
                    self._cache[(c.text, c.n_attrs)] = row
            rows = [self._cache[(c.text, c.n_attrs)] for c in candidates]
        results = [Scored(c.text, c.n_attrs, r.output, r.score, r.succeeded, c.payload, c.word)
                   for c, r in zip(candidates, rows)]
        return results, self.num_queries == self.query_budget

    def _call_model(self, texts: list[str]) -> torch.Tensor:  # stock-calls schedule
        """``GoalFunction._call_model_uncached`` for tensor outputs."""
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            preds = self.model(texts[start:start + self.batch_size])
            self.model_calls += 1
            outputs.append(preds.cpu() if isinstance(preds, torch.Tensor) else torch.as_tensor(preds))
        return self.goal_function._process_model_outputs(texts, torch.cat(outputs, dim=0))


def process_rows(logits: torch.Tensor) -> torch.Tensor:
    """``ClassificationGoalFunction._process_model_outputs`` row by row: softmax, as stock applies
    it to a call whose rows do not all sum to 1. A row that does sum to 1 within stock's 1e-6
    (stock's decision would then depend on the other rows of its call) is not represented."""
    from attacks.engine.text import NotRepresentable

    if logits.ndim != 2:
        raise NotRepresentable(f"model output of shape {tuple(logits.shape)}")
    if ((logits.sum(dim=1) - 1).abs() < 1e-6).any():
        raise NotRepresentable("logits that already sum to 1")
    scores = torch.nn.functional.softmax(logits, dim=1)
    if not ((scores.sum(dim=1) - 1).abs() < 1e-6).all():
        raise NotRepresentable("scores that do not sum to 1 after the softmax")
    return scores.cpu()
