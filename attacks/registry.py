"""The attack registry: what each attack is, what it needs, how it differs from stock, and how
it is built (TextAttack recipes) or evaluated (the suite's own attacks).

Importing this module does not import TextAttack (whose first import touches NLTK data and
the network): a spec names its builder / evaluator as ``"module:function"``, imported only
when :meth:`AttackSpec.build` / :meth:`AttackSpec.evaluate` runs (``attacks.recipes`` for the
TextAttack builders, ``attacks.native`` for k-PGD and AdvGLUE).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from suite.core.errors import SuiteError
from suite.core.registry import Registry

if TYPE_CHECKING:
    from suite.data.examples import Example
    from suite.models.base import TextClassifier

KINDS = ("textattack", "embedding", "static")
STOCK_BUILDER = "attacks.recipes:build_stock"  # the TextAttack recipe ``spec.recipe`` as it is


class NativeResult(NamedTuple):
    """What a native (non-TextAttack) attack's evaluation gives: metrics without the attack-name
    prefix, the hash of its recorded settings, the summary logged as JSON, per-example records."""

    metrics: dict[str, float]
    attack_hash: str
    summary: dict[str, Any]
    records: list[dict[str, Any]]


def _resolve(dotted: str, what: str, name: str) -> Callable[..., Any]:
    """The function ``"module:function"`` names (a registry entry's builder or evaluator)."""
    module, _, attr = dotted.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SuiteError(f"attack {name}: its {what} '{dotted}' cannot be imported ({exc}); "
                         "fix the entry in attacks/registry.py") from None
    if not callable(target):
        raise SuiteError(f"attack {name}: its {what} '{dotted}' is not a function; "
                         "fix the entry in attacks/registry.py")
    return target


@dataclass(frozen=True)
class AttackSpec:
    name: str
    description: str
    requires: tuple[str, ...]  # resource names, see attacks.resources
    recipe: str  # the TextAttack recipe it is (or is derived from)
    variant: str = "stock"  # "stock" | "offline" (a declared substitute, never shown as stock)
    substitutions: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # recorded with every run
    reference: str = ""
    kind: str = "textattack"  # "textattack" | "embedding" (k-PGD) | "static" (AdvGLUE)
    # "module:function" building the TextAttack Attack, called as builder(spec, model_wrapper)
    builder: str = STOCK_BUILDER
    # "module:function" running a native attack, called as evaluator(spec, model, examples, dataset)
    evaluator: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SuiteError(f"attack {self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "textattack" and not self.builder:
            raise SuiteError(f"attack {self.name}: a TextAttack attack needs a builder")
        if self.kind == "textattack" and self.variant != "stock" and self.builder == STOCK_BUILDER:
            raise SuiteError(f"attack {self.name}: an {self.variant} variant needs its own builder, "
                             "not the stock recipe")
        if self.kind != "textattack" and not self.evaluator:
            raise SuiteError(f"attack {self.name}: a {self.kind} attack needs an evaluator")

    def record(self) -> dict[str, Any]:
        return {"attack": self.name, "kind": self.kind, "recipe": self.recipe, "attack_variant": self.variant,
                "substitutions": list(self.substitutions), "settings": self.settings,
                "requires": list(self.requires)}

    @property
    def native(self) -> bool:
        """True for the suite's own attacks (:meth:`evaluate`), False for TextAttack recipes (:meth:`build`)."""
        return self.kind != "textattack"

    def build(self, model_wrapper: Any, query_budget: int | None = None) -> Any:
        """The ``textattack.Attack`` of this spec against ``model_wrapper``.

        Raises ``MissingResourceError`` (one line: which resources, why, how to fix) before any
        TextAttack code runs when a resource the attack declares is unavailable.
        """
        if self.native:
            raise SuiteError(f"attack {self.name} is the suite's own {self.kind} attack, not a TextAttack recipe; "
                             "run it with AttackSpec.evaluate")
        from attacks.resources import prepare_textattack_env, require

        builder = _resolve(self.builder, "builder", self.name)
        require(self.requires)
        prepare_textattack_env()
        attack = builder(self, model_wrapper)
        if query_budget:
            attack.goal_function.query_budget = query_budget
        return attack

    def evaluate(self, model: "TextClassifier", examples: "Sequence[Example]", dataset: str) -> NativeResult:
        """Run a native attack (k-PGD on ``examples``, AdvGLUE's set for ``dataset``) on ``model``."""
        if not self.native:
            raise SuiteError(f"attack {self.name} is a TextAttack recipe; attack examples with "
                             "attacks.evaluation.run_attack")
        return _resolve(self.evaluator, "evaluator", self.name)(self, model, examples, dataset)


ATTACKS: Registry[AttackSpec] = Registry("attack")


def _add(spec: AttackSpec) -> None:
    ATTACKS.register(spec.name)(spec)


USE_TO_SBERT = "Universal Sentence Encoder (TF-Hub) replaced by local SBERT all-MiniLM-L6-v2 with the recipe's threshold and metric"
EMBEDDING_TO_NEIGHBOURS = ("counter-fitted embedding nearest neighbours replaced by the Jia et al. (2019) "
                           "counter-fitted neighbour lists (<= 8 per word); the cosine/MSE distance constraint "
                           "on the vectors is dropped (the lists were built with Alzantot et al.'s distance rule)")

_add(AttackSpec("pwws", "PWWS (Ren et al. 2019): WordNet synonym swaps ranked by weighted saliency",
                ("wordnet", "stopwords"), "PWWSRen2019", reference="FLAT Table 3; WETAR; robust_instances"))
_add(AttackSpec("deepwordbug", "DeepWordBug (Gao et al. 2018): character edits ranked by a word-importance score",
                ("stopwords",), "DeepWordBugGao2018", reference="adaptive_at; robust_instances"))
_add(AttackSpec("textfooler", "TextFooler (Jin et al. 2020), stock: counter-fitted embedding swaps + POS + USE",
                ("counterfitted_embedding", "pos_tagger", "use_encoder"), "TextFoolerJin2019"))
_add(AttackSpec("textfooler-offline", "TextFooler with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "pos_tagger", "sbert_minilm"), "TextFoolerJin2019", variant="offline",
                builder="attacks.recipes:build_textfooler_offline",
                substitutions=(EMBEDDING_TO_NEIGHBOURS + "; max_candidates 50 -> the list's <= 8", USE_TO_SBERT),
                settings={"use_threshold": 0.840845057, "use_metric": "angular", "window_size": 15}))
_add(AttackSpec("textbugger", "TextBugger (Li et al. 2019), stock: character edits, homoglyphs, embedding swaps, USE",
                ("counterfitted_embedding", "use_encoder", "homoglyphs"), "TextBuggerLi2018"))
_add(AttackSpec("textbugger-offline", "TextBugger with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "sbert_minilm", "homoglyphs"), "TextBuggerLi2018", variant="offline",
                builder="attacks.recipes:build_textbugger_offline",
                substitutions=(EMBEDDING_TO_NEIGHBOURS + "; max_candidates 5 kept", USE_TO_SBERT,
                               "homoglyph list read from the resource mirror (missing from the 0.3.11 wheel)"),
                settings={"use_threshold": 0.8, "use_metric": "angular"}))
_add(AttackSpec("bert-attack", "BERT-Attack (Li et al. 2020): masked-LM substitutions", ("masked_lm", "use_encoder"),
                "BERTAttackLi2020"))
_add(AttackSpec("bae", "BAE (Garg & Ramakrishnan 2020): masked-LM replace", ("masked_lm", "use_encoder"), "BAEGarg2019",
                reference="adaptive_at Tables 2-5"))
_add(AttackSpec("clare", "CLARE (Li et al. 2021): contextual masked-LM replace/insert/merge", ("masked_lm", "use_encoder"),
                "CLARE2020", reference="FLAT App. (unforeseen attacks)"))
_add(AttackSpec("gene", "Genetic attack (Alzantot et al. 2018), stock: counter-fitted swaps + Google 1B LM",
                ("counterfitted_embedding", "google_lm"), "GeneticAlgorithmAlzantot2018"))
_add(AttackSpec("gene-offline", "Genetic attack (Alzantot et al. 2018) with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "stopwords"), "GeneticAlgorithmAlzantot2018", variant="offline",
                builder="attacks.recipes:build_genetic_offline",
                substitutions=(EMBEDDING_TO_NEIGHBOURS,
                               "Google 1B-words language-model constraint dropped (model not obtainable offline)"),
                settings={"pop_size": 60, "max_iters": 20, "max_percent_words": 0.2},
                reference="FLAT Table 4 (unforeseen attacks)"))
_add(AttackSpec("iga-offline", "Improved genetic attack (Wang et al. 2019) with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "stopwords"), "IGAWang2019", variant="offline",
                builder="attacks.recipes:build_improved_genetic_offline",
                substitutions=(EMBEDDING_TO_NEIGHBOURS + "; max_candidates 50 -> the list's <= 8",),
                settings={"pop_size": 60, "max_iters": 20, "max_replace_times_per_index": 5, "max_percent_words": 0.2},
                reference="FLAT Table 4 (unforeseen attacks)"))
_add(AttackSpec("iga", "Improved genetic attack (Wang et al. 2019), stock: counter-fitted swaps",
                ("counterfitted_embedding",), "IGAWang2019"))
_add(AttackSpec("pso", "PSO (Zang et al. 2020): HowNet sememe swaps", ("hownet",), "PSOZang2020"))
_add(AttackSpec("k-pgd", "k-PGD in embedding space (CARL/RAR §4.5): accuracy and clean-vs-adversarial "
                "representation cosine / Euclidean distance", (), "suite", kind="embedding",
                builder="", evaluator="attacks.native:evaluate_kpgd",
                settings={"epsilon": 0.1, "steps": 10, "step_size": "2.5*epsilon/steps"},
                reference="carl_rar Tables 4-5"))
_add(AttackSpec("advglue", "AdvGLUE static adversarial dev set (sst2 / qnli jobs): accuracy only", (), "suite",
                kind="static", builder="", evaluator="attacks.native:evaluate_static",
                reference="adaptive_at Tables 2-3"))
