"""``EngineAttack``: a stock ``Attack``'s configuration run by the engine, with stock's records.

``attack(example, ground_truth_output)`` takes what ``textattack.Attack.attack`` takes and
returns TextAttack's own result classes (``SuccessfulAttackResult``, ``FailedAttackResult``,
``SkippedAttackResult``) with the same perturbed text, the same goal statuses and the same
query count as stock. An example the engine cannot represent (a multi-column input, a swap
that re-tokenises the text) is attacked by the stock ``Attack`` from the RNG state the
example started with, so its record is stock's by construction; ``fallbacks`` counts them.
"""
from __future__ import annotations

import random
from collections import Counter, OrderedDict
from typing import Any

import numpy as np
import torch

from attacks.engine.goal import GoalEmulator, Scored
from attacks.engine.greedy_wir import GreedyWIRSearch, score_initial
from attacks.engine.support import Plan
from attacks.engine.text import NotRepresentable


class EngineAttack:
    def __init__(self, attack: Any, plan: Plan, name: str, version: int) -> None:
        self.stock = attack
        self.goal_function = attack.goal_function
        self.plan = plan
        self.search = GreedyWIRSearch(attack, plan)
        self.name, self.version = name, version
        self.fallbacks = 0
        self.fallback_reasons: Counter[str] = Counter()  # why examples ran on stock TextAttack
        self.model_calls = 0
        self._merged: bool | None = None  # decided on the first example (attacks.engine.invariance)

    @property
    def schedule(self) -> str:
        """``merged`` or ``stock-calls`` (see attacks.engine.goal); ``undecided`` before the first example."""
        return {None: "undecided", True: "merged", False: "stock-calls"}[self._merged]

    def use_schedule(self, schedule: str) -> None:
        """Force ``merged`` or ``stock-calls`` (tests; ``merged`` is exact only where scores are batch-invariant)."""
        if schedule not in ("merged", "stock-calls"):
            raise ValueError(f"unknown schedule {schedule!r}")
        self._merged = schedule == "merged"

    def _decide_schedule(self) -> bool:
        from attacks.engine.invariance import wrapper_is_batch_invariant

        return wrapper_is_batch_invariant(self.goal_function.model)

    def __str__(self) -> str:  # the stock Attack's description: the configuration the records follow
        return str(self.stock)

    def attack(self, example: Any, ground_truth_output: int) -> Any:
        from textattack.shared import AttackedText

        if isinstance(example, OrderedDict) and len(example) > 1:
            self.fallbacks += 1
            self.fallback_reasons["a multi-column input"] += 1
            return self.stock.attack(example, ground_truth_output)
        state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        initial_stock = example if isinstance(example, AttackedText) else AttackedText(example)
        try:
            return self._attack(initial_stock, ground_truth_output)
        except NotRepresentable as exc:
            self.fallback_reasons[str(exc)] += 1
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])
            self.fallbacks += 1
            return self.stock.attack(example, ground_truth_output)

    def _attack(self, initial_stock: Any, ground_truth_output: int) -> Any:
        from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

        if self._merged is None:
            self._merged = self._decide_schedule()
        goal = GoalEmulator(self.goal_function, ground_truth_output, self._merged)
        initial = score_initial(goal, initial_stock.text)
        try:
            if initial.succeeded:  # already misclassified: GoalFunctionResultStatus.SKIPPED
                return SkippedAttackResult(self._result(initial, initial_stock, goal, skipped=True))
            final = self.search.run(goal, initial, initial_stock)
            original = self._result(initial, initial_stock, goal, queries=1)
            perturbed = self._result(final, None, goal)
            return (SuccessfulAttackResult if final.succeeded else FailedAttackResult)(original, perturbed)
        finally:
            self.model_calls += goal.model_calls

    def _result(self, scored: Scored, stock_text: Any, goal: GoalEmulator, queries: int | None = None,
                skipped: bool = False) -> Any:
        """A ``ClassificationGoalFunctionResult`` as stock builds it (``num_queries``: the count when
        it was made, except the final result, which carries the search's total)."""
        from textattack.goal_function_results import ClassificationGoalFunctionResult, GoalFunctionResultStatus
        from textattack.shared import AttackedText

        if skipped:
            status = GoalFunctionResultStatus.SKIPPED
        else:
            status = GoalFunctionResultStatus.SUCCEEDED if scored.succeeded else GoalFunctionResultStatus.SEARCHING
        text = stock_text if stock_text is not None else (scored.payload or AttackedText(scored.text))
        return ClassificationGoalFunctionResult(text, scored.output, int(scored.output.argmax()), status,
                                                torch.tensor(scored.score),
                                                goal.num_queries if queries is None else queries, goal.ground_truth)
