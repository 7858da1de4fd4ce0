"""The builders the attack registry names (``AttackSpec.builder``): stock recipes as they are;
offline variants composed from TextAttack's own parts plus the subclasses in ``transformations``.

Every builder is called as ``builder(spec, model_wrapper)`` by :meth:`AttackSpec.build`, after
the spec's resources are checked and the offline TextAttack environment is prepared.

:func:`build_attack` builds quietly unless the process is verbose (:func:`console_verbose`):
TextAttack 0.3.11 has things printed while a recipe is built that a normal run hides. NLTK's
"[nltk_data] Error loading omw-1.4" lines: ``WordSwapWordNet.__init__`` calls
``nltk.download("omw-1.4")``, which needs NLTK's online index even when the data is present (so
no local copy can stop it) and prints to the stream nltk bound as ``sys.stderr`` when first
imported (so swapping ``sys.stderr`` does not reach it). The build therefore writes file
descriptor 2 to a temporary file, dropped when the build succeeds and copied to stderr when it
fails. TextAttack's "Unknown if model of class ... compatible with goal function" warning comes
from logger ``textattack.shared.utils.install``, which TextAttack sets to INFO on import; after
the build it is set to ERROR (INFO when verbose), for what TextAttack logs while attacking.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from attacks.registry import ATTACKS, AttackSpec
from attacks.resources import require
from suite.core.errors import SuiteError

#: TextAttack 0.3.11's logger (own stderr handler, does not propagate; textattack/shared/utils/install.py)
TEXTATTACK_LOGGER = "textattack.shared.utils.install"


def console_verbose() -> bool:
    """Whether this process shows library output: the ``suite`` logger is enabled for INFO.

    ``suite -v`` sets the root logger to INFO and a normal run to WARNING
    (``suite.run.console.configure_console``, which this layer may not import). Without it, as in
    a plain Python session, the root logger's default WARNING means quiet.
    """
    return logging.getLogger("suite").isEnabledFor(logging.INFO)


def _flush_stderr() -> None:
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or not a real stream
            pass


@contextmanager
def quiet_textattack(verbose: bool | None = None) -> Iterator[None]:
    """Hide what TextAttack and NLTK print while the body builds an attack, unless ``verbose``
    (default: :func:`console_verbose`); see the module docstring. What was written to file
    descriptor 2 is copied to it if the body raises. Afterwards TextAttack's logger is at ERROR
    (INFO when verbose) if TextAttack is loaded."""
    if verbose is None:
        verbose = console_verbose()
    saved = None
    if not verbose:
        _flush_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (closed): nothing reaches a terminal anyway
            pass
    if saved is None:
        try:
            yield
        finally:
            _set_textattack_level(verbose)
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            _set_textattack_level(verbose)
            if failed:
                sink.seek(0)
                captured = sink.read()
                if captured:
                    os.write(2, captured)


def _set_textattack_level(verbose: bool) -> None:
    if TEXTATTACK_LOGGER in sys.modules:  # the logger is configured by importing its module
        logging.getLogger(TEXTATTACK_LOGGER).setLevel(logging.INFO if verbose else logging.ERROR)


def build_stock(spec: AttackSpec, model_wrapper: Any) -> Any:
    """TextAttack's own recipe ``spec.recipe`` (e.g. ``PWWSRen2019``), built as it is."""
    from importlib.metadata import version

    import textattack.attack_recipes as recipes

    recipe = getattr(recipes, spec.recipe, None)
    if not (isinstance(recipe, type) and issubclass(recipe, recipes.AttackRecipe)):
        raise SuiteError(f"attack {spec.name}: TextAttack {version('textattack')} has no attack recipe "
                         f"'{spec.recipe}'; fix the entry's recipe in attacks/registry.py "
                         "(a class of textattack.attack_recipes)")
    return recipe.build(model_wrapper)


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


def build_textfooler_offline(spec: AttackSpec, model_wrapper: Any) -> Any:
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


def build_textbugger_offline(spec: AttackSpec, model_wrapper: Any) -> Any:
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


def build_genetic_offline(spec: AttackSpec, model_wrapper: Any) -> Any:
    """GeneticAlgorithmAlzantot2018.build with the declared substitutions (``gene-offline``)."""
    return _genetic_offline(model_wrapper, improved=False)


def build_improved_genetic_offline(spec: AttackSpec, model_wrapper: Any) -> Any:
    """IGAWang2019.build with the declared substitutions (``iga-offline``)."""
    return _genetic_offline(model_wrapper, improved=True)


def build_attack(name: str, model_wrapper: Any, query_budget: int | None = None) -> tuple[Any, AttackSpec]:
    """Build registered attack ``name`` against ``model_wrapper``: (``spec.build(...)``, spec).

    Raises ``MissingResourceError`` (one line: which resources, why, how to fix) before any
    TextAttack code runs when a resource the attack declares is unavailable. Built inside
    :func:`quiet_textattack`: unless the process is verbose, what the build prints is hidden.
    """
    spec = ATTACKS.get(name)
    with quiet_textattack():
        attack = spec.build(model_wrapper, query_budget)
    return attack, spec
