"""The attack registry: what each attack is, what it needs, and how it differs from stock.

Importing this module does not import TextAttack (whose first import touches NLTK data and
the network); recipes are built lazily by ``attacks.recipes.build_attack``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from suite.core.registry import Registry


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

    def record(self) -> dict[str, Any]:
        return {"attack": self.name, "kind": self.kind, "recipe": self.recipe, "attack_variant": self.variant,
                "substitutions": list(self.substitutions), "settings": self.settings,
                "requires": list(self.requires)}


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
                substitutions=(EMBEDDING_TO_NEIGHBOURS + "; max_candidates 50 -> the list's <= 8", USE_TO_SBERT),
                settings={"use_threshold": 0.840845057, "use_metric": "angular", "window_size": 15}))
_add(AttackSpec("textbugger", "TextBugger (Li et al. 2019), stock: character edits, homoglyphs, embedding swaps, USE",
                ("counterfitted_embedding", "use_encoder", "homoglyphs"), "TextBuggerLi2018"))
_add(AttackSpec("textbugger-offline", "TextBugger with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "sbert_minilm", "homoglyphs"), "TextBuggerLi2018", variant="offline",
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
                substitutions=(EMBEDDING_TO_NEIGHBOURS,
                               "Google 1B-words language-model constraint dropped (model not obtainable offline)"),
                settings={"pop_size": 60, "max_iters": 20, "max_percent_words": 0.2},
                reference="FLAT Table 4 (unforeseen attacks)"))
_add(AttackSpec("iga-offline", "Improved genetic attack (Wang et al. 2019) with offline substitutes (declared variant)",
                ("counterfitted_neighbors", "stopwords"), "IGAWang2019", variant="offline",
                substitutions=(EMBEDDING_TO_NEIGHBOURS + "; max_candidates 50 -> the list's <= 8",),
                settings={"pop_size": 60, "max_iters": 20, "max_replace_times_per_index": 5, "max_percent_words": 0.2},
                reference="FLAT Table 4 (unforeseen attacks)"))
_add(AttackSpec("iga", "Improved genetic attack (Wang et al. 2019), stock: counter-fitted swaps",
                ("counterfitted_embedding",), "IGAWang2019"))
_add(AttackSpec("pso", "PSO (Zang et al. 2020): HowNet sememe swaps", ("hownet",), "PSOZang2020"))
_add(AttackSpec("k-pgd", "k-PGD in embedding space (CARL/RAR §4.5): accuracy and clean-vs-adversarial "
                "representation cosine / Euclidean distance", (), "suite", kind="embedding",
                settings={"epsilon": 0.1, "steps": 10, "step_size": "2.5*epsilon/steps"},
                reference="carl_rar Tables 4-5"))
_add(AttackSpec("advglue", "AdvGLUE static adversarial dev set (sst2 / qnli jobs): accuracy only", (), "suite",
                kind="static", reference="adaptive_at Tables 2-3"))
