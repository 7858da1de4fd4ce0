"""Building TextAttack attacks for registered specs (stock recipes as they are; offline
variants composed from TextAttack's own parts plus the subclasses in ``transformations``)."""
from __future__ import annotations

from typing import Any, Callable

from attacks.registry import ATTACKS, AttackSpec
from attacks.resources import prepare_textattack_env, require


def _stock(recipe: str) -> Callable[[Any], Any]:
    def build(model_wrapper: Any) -> Any:
        import textattack.attack_recipes as recipes

        return getattr(recipes, recipe).build(model_wrapper)

    return build


def _sbert(threshold: float, **kwargs: Any) -> Any:
    from textattack.constraints.semantics.sentence_encoders import SBERT

    from suite.models.registry import minilm_path

    return SBERT(threshold=threshold, metric="angular", model_name=str(minilm_path()), **kwargs)


def textfooler_stopwords() -> set[str]:
    """The TextFooler recipe's own 266-word stopword list, read from the recipe's code.

    The list is a literal inside ``TextFoolerJin2019.build``; building the stock recipe to get
    it would download the counter-fitted embedding, and copying it would let the two drift.
    It is the only 266-string constant of that function (checked), so it is read from there.
    """
    from textattack.attack_recipes import TextFoolerJin2019

    build = getattr(TextFoolerJin2019.build, "__func__", TextFoolerJin2019.build)
    lists = [c for c in build.__code__.co_consts
             if isinstance(c, tuple) and len(c) > 100 and all(isinstance(w, str) for w in c)]
    if len(lists) != 1 or len(lists[0]) != 266:
        raise RuntimeError("TextFoolerJin2019.build no longer holds one 266-word stopword list; "
                           "this variant is written for textattack 0.3.11")
    return set(lists[0])


def _textfooler_offline(model_wrapper: Any) -> Any:
    """TextFoolerJin2019.build with the declared substitutions (see the registry entry)."""
    from textattack import Attack
    from textattack.constraints.grammaticality import PartOfSpeech
    from textattack.constraints.pre_transformation import (InputColumnModification, RepeatModification,
                                                           StopwordModification)
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    from attacks.transformations import WordSwapNeighbourList, load_counterfitted_neighbors

    constraints = [RepeatModification(), StopwordModification(stopwords=textfooler_stopwords()),
                   InputColumnModification(["premise", "hypothesis"], {"premise"}),
                   PartOfSpeech(allow_verb_noun_swap=True),
                   _sbert(0.840845057, compare_against_original=False, window_size=15, skip_text_shorter_than_window=True)]
    return Attack(UntargetedClassification(model_wrapper), constraints,
                  WordSwapNeighbourList(load_counterfitted_neighbors(), max_candidates=50),
                  GreedyWordSwapWIR(wir_method="delete"))


def _textbugger_offline(model_wrapper: Any) -> Any:
    """TextBuggerLi2018.build with the declared substitutions (see the registry entry)."""
    from textattack import Attack
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import (CompositeTransformation, WordSwapNeighboringCharacterSwap,
                                            WordSwapRandomCharacterDeletion, WordSwapRandomCharacterInsertion)

    from attacks.transformations import MirrorHomoglyphSwap, WordSwapNeighbourList, load_counterfitted_neighbors

    homoglyphs = require(["homoglyphs"])["homoglyphs"].location
    transformation = CompositeTransformation([
        WordSwapRandomCharacterInsertion(random_one=True, letters_to_insert=" ", skip_first_char=True, skip_last_char=True),
        WordSwapRandomCharacterDeletion(random_one=True, skip_first_char=True, skip_last_char=True),
        WordSwapNeighboringCharacterSwap(random_one=True, skip_first_char=True, skip_last_char=True),
        MirrorHomoglyphSwap(homoglyphs),
        WordSwapNeighbourList(load_counterfitted_neighbors(), max_candidates=5),
    ])
    constraints = [RepeatModification(), StopwordModification(), _sbert(0.8)]
    return Attack(UntargetedClassification(model_wrapper), constraints, transformation,
                  GreedyWordSwapWIR(wir_method="delete"))


def _genetic_offline(model_wrapper: Any, improved: bool) -> Any:
    """GeneticAlgorithmAlzantot2018 / IGAWang2019 .build with the declared substitutions."""
    from textattack import Attack
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import (InputColumnModification, RepeatModification,
                                                           StopwordModification)
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import AlzantotGeneticAlgorithm, ImprovedGeneticAlgorithm

    from attacks.transformations import WordSwapNeighbourList, load_counterfitted_neighbors

    transformation = WordSwapNeighbourList(load_counterfitted_neighbors(), max_candidates=50 if improved else 8)
    if improved:
        constraints = [StopwordModification(), MaxWordsPerturbed(max_percent=0.2)]
        search = ImprovedGeneticAlgorithm(pop_size=60, max_iters=20, max_replace_times_per_index=5,
                                          post_crossover_check=False)
    else:
        constraints = [RepeatModification(), StopwordModification(),
                       InputColumnModification(["premise", "hypothesis"], {"premise"}), MaxWordsPerturbed(max_percent=0.2)]
        search = AlzantotGeneticAlgorithm(pop_size=60, max_iters=20, post_crossover_check=False)
    return Attack(UntargetedClassification(model_wrapper), constraints, transformation, search)


_CUSTOM: dict[str, Callable[[Any], Any]] = {
    "gene-offline": lambda wrapper: _genetic_offline(wrapper, improved=False),
    "iga-offline": lambda wrapper: _genetic_offline(wrapper, improved=True),
    "textfooler-offline": _textfooler_offline,
    "textbugger-offline": _textbugger_offline,
}


def build_attack(name: str, model_wrapper: Any, query_budget: int | None = None) -> tuple[Any, AttackSpec]:
    """Build attack ``name`` against ``model_wrapper``.

    Raises ``MissingResourceError`` (one line: which resources, why, how to fix) before any
    TextAttack code runs when a resource the attack declares is unavailable.
    """
    spec = ATTACKS.get(name)
    require(spec.requires)
    prepare_textattack_env()
    attack = _CUSTOM.get(name, _stock(spec.recipe))(model_wrapper)
    if query_budget:
        attack.goal_function.query_budget = query_budget
    return attack, spec
