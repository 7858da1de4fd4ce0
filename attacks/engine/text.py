"""The engine's text representation: a text, its TextAttack words and where each word sits.

TextAttack builds a full ``AttackedText`` for every candidate (re-tokenising the new text,
copying index maps); that is 40 % of a stock PWWS run. A candidate here is only its string,
made by the same rule as ``AttackedText.generate_new_attacked_text`` for a one-word change:

* the words of the current text are found one after another with ``str.index`` in what is
  left of the text (the stock loop), which gives each word's span;
* the word at ``i`` is replaced by the new string; when the new string has no words (a
  deletion) and text follows, one space is dropped: the one after the word for ``i == 0``,
  else the one before it (stock's rule, kept exactly).

Texts holding TextAttack's ``<SPLIT>`` token (multi-column inputs) are not represented
here; :func:`spans_of` refuses them and the engine runs the example on stock TextAttack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

SPLIT_TOKEN = "<SPLIT>"  # textattack.shared.AttackedText.SPLIT_TOKEN


class NotRepresentable(Exception):
    """This text (or change) is outside what the engine reproduces; run the example on stock TextAttack."""


@lru_cache(maxsize=2**16)
def words_of(text: str) -> tuple[str, ...]:
    """``textattack.shared.utils.words_from_text(text)``, memoised (it is pure)."""
    from textattack.shared.utils import words_from_text

    return tuple(words_from_text(text))


def spans_of(text: str, words: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(start, end) of each word in ``text``, found as ``generate_new_attacked_text`` finds them."""
    if SPLIT_TOKEN in text:
        raise NotRepresentable("text holds TextAttack's <SPLIT> token")
    spans = []
    position = 0
    for word in words:
        try:
            start = text.index(word, position)
        except ValueError:
            raise NotRepresentable(f"word {word!r} not found in its text") from None
        position = start + len(word)
        spans.append((start, position))
    return tuple(spans)


@dataclass(frozen=True)
class Text:
    """A text the search stands on (the original or an accepted perturbation)."""

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] = field(repr=False)

    @classmethod
    def of(cls, text: str) -> "Text":
        words = words_of(text)
        return cls(text, words, spans_of(text, words))

    def replaced(self, index: int, new_word: str) -> str:
        """The text of ``AttackedText.replace_word_at_index(index, new_word)`` (``""``: delete)."""
        start, end = self.spans[index]
        prefix, rest = self.text[:start], self.text[end:]
        if not words_of(new_word) and rest:
            if index == 0:
                if rest[0] == " ":
                    rest = rest[1:]
            elif prefix[-1] == " ":
                prefix = prefix[:-1]
        return prefix + new_word + rest
