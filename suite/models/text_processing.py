"""FLAT's word-level preprocessing (FLAT App. A "Datasets", Table 6).

"We clean up the text by converting all characters to lowercase, removing extra whitespaces
and special characters. We tokenize texts and remove low-frequency words to build vocab. We
truncate or pad sentences to the same length for mini-batch during training."

The cleaning rule follows Kim (2014)'s ``clean_str`` (the code base FLAT builds on): keep
letters, digits and ``(),!?'` ``, split clitics, collapse whitespace. The low-frequency rule
keeps a word when its training-set count is ``>= threshold`` (threshold 0 keeps every word).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

PAD, UNK = "<pad>", "<unk>"

# FLAT Table 6: dataset -> (vocab size reported, low-frequency threshold, sentence length)
FLAT_TABLE6: dict[str, tuple[int, int, int]] = {
    "sst2_sentence": (13838, 0, 50),
    "sst2": (13838, 0, 50),
    "imdb": (29571, 5, 250),
    "ag_news": (21821, 5, 50),
    "trec": (8095, 0, 15),
}
# Datasets FLAT does not cover: suite defaults (recorded as such in the run).
SUITE_DEFAULT_PREPROCESSING: dict[str, tuple[int, int]] = {"mr": (0, 50), "qnli": (0, 80)}

_CLEAN_RULES = [
    (re.compile(r"[^a-z0-9(),!?'`]"), " "),
    (re.compile(r"'s\b"), " 's"), (re.compile(r"'ve\b"), " 've"), (re.compile(r"n't\b"), " n't"),
    (re.compile(r"'re\b"), " 're"), (re.compile(r"'d\b"), " 'd"), (re.compile(r"'ll\b"), " 'll"),
    (re.compile(r","), " , "), (re.compile(r"!"), " ! "), (re.compile(r"\("), " ( "),
    (re.compile(r"\)"), " ) "), (re.compile(r"\?"), " ? "), (re.compile(r"\s{2,}"), " "),
]


def clean_text(text: str) -> str:
    text = text.lower()
    for pattern, repl in _CLEAN_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def tokenize(text: str) -> list[str]:
    return clean_text(text).split()


def preprocessing_for(dataset: str) -> tuple[int, int, str]:
    """(threshold, length, where the numbers come from) for ``dataset``."""
    if dataset in FLAT_TABLE6:
        _, threshold, length = FLAT_TABLE6[dataset]
        return threshold, length, "FLAT Table 6"
    threshold, length = SUITE_DEFAULT_PREPROCESSING.get(dataset, (0, 50))
    return threshold, length, "suite default (not in FLAT Table 6)"


@dataclass
class Vocabulary:
    words: list[str]  # index -> word; 0 = PAD, 1 = UNK

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], threshold: int) -> "Vocabulary":
        counts = Counter(tok for text in texts for tok in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= threshold), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, text: str, length: int) -> list[int]:
        """Token ids truncated to ``length`` (at least one token: UNK for an empty text)."""
        ids = [self.index.get(tok, 1) for tok in tokenize(text)][:length]
        return ids or [1]
