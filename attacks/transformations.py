"""Offline stand-ins for TextAttack parts whose resources are not available, as subclasses
(TextAttack itself is never patched)."""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path


from attacks.resources import prepare_textattack_env

prepare_textattack_env()  # TextAttack's import needs the offline NLTK data in place
from textattack.transformations import WordSwap
from textattack.transformations.word_swaps import WordSwapHomoglyphSwap

from suite.data import mirror
from suite.core.errors import MissingDataError


@lru_cache(maxsize=1)
def load_counterfitted_neighbors() -> dict[str, tuple[str, ...]]:
    """Jia et al. (2019) neighbour lists from ``$SUITE_RESOURCES_DIR/counterfitted_neighbors``."""
    root = mirror.resources_dir()
    folder = root / "counterfitted_neighbors" if root else None
    if folder is None or not folder.is_dir():
        raise MissingDataError("counter-fitted neighbour lists not found; set SUITE_RESOURCES_DIR to the resource mirror")
    info = mirror.read_manifest(folder)["files"]["counterfitted_neighbors.json.gz"]
    file = mirror.MirrorFile(folder / "counterfitted_neighbors.json.gz", info["sha256"], None)
    mirror.verify(file)
    with gzip.open(file.path, "rt", encoding="utf-8") as fh:
        raw = json.load(fh)
    return {w: tuple(n) for w, n in raw.items() if n}


class WordSwapNeighbourList(WordSwap):
    """Swap a word for one of its listed neighbours (first ``max_candidates``, list order)."""

    def __init__(self, neighbours: dict[str, tuple[str, ...]], max_candidates: int = 8) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.max_candidates = max_candidates

    def _get_replacement_words(self, word: str) -> list[str]:
        candidates = self.neighbours.get(word.lower(), ())[: self.max_candidates]
        if word[:1].isupper():
            return [c.capitalize() for c in candidates]
        return list(candidates)

    def extra_repr_keys(self) -> list[str]:
        return ["max_candidates"]


class MirrorHomoglyphSwap(WordSwapHomoglyphSwap):
    """TextAttack's homoglyph swap, reading the intentional-homoglyph list from ``path``.

    The 0.3.11 wheel lacks ``textattack/shared/intentional_homoglyphs.txt``; the parent's
    constructor sets its fixed homoglyph map and then fails opening that file, so the list is
    parsed here, with the parent's own parsing rule, from the mirror copy.
    """

    def __init__(self, path: Path, random_one: bool = False, **kwargs: object) -> None:
        try:
            super().__init__(random_one=random_one, **kwargs)
        except FileNotFoundError:
            self.random_one = random_one
        self.homos_intentional: dict[str, list[str]] = {}
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip() and not line.startswith("#"):
                    line = line.replace("#*", "#")
                    try:
                        _, data = line.split("#", maxsplit=1)
                        self.homos_intentional.setdefault(data[3], []).append(data[7])
                    except IndexError:
                        continue
