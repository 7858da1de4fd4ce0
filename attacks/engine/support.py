"""Which stock ``Attack`` objects the engine reproduces, and how (:class:`Plan`).

Covered: an ``Attack`` whose goal function is ``UntargetedClassification`` (no target score,
not maximizable, cached), whose search is ``GreedyWordSwapWIR`` with the ``unk``,
``weighted-saliency`` or ``delete`` ranking, and whose transformation is a ``WordSwap`` (or a
``CompositeTransformation`` of them) that generates candidates through ``WordSwap``'s own
``_get_transformations``. That is the registry's ``pwws``, ``deepwordbug``, ``textfooler``,
``textfooler-offline``, ``textbugger`` and ``textbugger-offline`` (and ``bae``/``bert-attack``
are not: masked-LM transformations generate whole texts). Anything else (the genetic and PSO
searches, targeted goals, gradient ranking) returns the reason it is not covered and runs on
stock TextAttack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIR_METHODS = ("unk", "weighted-saliency", "delete")


@dataclass(frozen=True)
class LevenshteinCheck:
    """``LevenshteinEditDistance`` on strings, with the same ``editdistance.eval``."""

    max_edit_distance: int
    compare_against_original: bool

    def accepts(self, text: str, reference: str) -> bool:
        import editdistance

        return editdistance.eval(reference, text) <= self.max_edit_distance


@dataclass(frozen=True)
class Plan:
    transformations: tuple[Any, ...]  # the WordSwaps, in stock order
    composite: bool  # a CompositeTransformation (its candidates are de-duplicated)
    cheap: tuple[LevenshteinCheck, ...]  # constraints computed on strings
    opaque: bool  # some constraint runs as a TextAttack object on stock AttackedTexts


class NotCovered(Exception):
    pass


def plan_for(attack: Any) -> Plan:
    """The engine's plan for ``attack``; raises :class:`NotCovered` (with the reason) otherwise."""
    from textattack.constraints.overlap import LevenshteinEditDistance
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import CompositeTransformation, Transformation, WordSwap

    goal = attack.goal_function
    if type(goal) is not UntargetedClassification or goal.target_max_score or goal.maximizable or not goal.use_cache:
        raise NotCovered(f"goal function {type(goal).__name__} (the engine reproduces plain UntargetedClassification)")
    search = attack.search_method
    if type(search) is not GreedyWordSwapWIR or search.wir_method not in WIR_METHODS:
        what = getattr(search, "wir_method", "")
        raise NotCovered(f"search {type(search).__name__}{f' ({what})' if what else ''} (the engine reproduces "
                         f"GreedyWordSwapWIR with {', '.join(WIR_METHODS)})")
    transformation = attack.transformation
    composite = isinstance(transformation, CompositeTransformation)
    if composite and type(transformation).__call__ is not CompositeTransformation.__call__:
        raise NotCovered(f"transformation {type(transformation).__name__} overrides __call__")
    parts = tuple(transformation.transformations) if composite else (transformation,)
    for part in parts:
        if not isinstance(part, WordSwap) or type(part)._get_transformations is not WordSwap._get_transformations \
                or type(part).__call__ is not Transformation.__call__:
            raise NotCovered(f"transformation {type(part).__name__} (the engine reproduces WordSwap subclasses "
                             "that only define _get_replacement_words)")
    cheap = []
    opaque = False
    for constraint in attack.constraints:
        if type(constraint) is LevenshteinEditDistance:
            cheap.append(LevenshteinCheck(constraint.max_edit_distance, constraint.compare_against_original))
        else:
            opaque = True
    return Plan(parts, composite, () if opaque else tuple(cheap), opaque)
