"""Does the victim give a text the same scores whatever it is batched with? (checked, not assumed)

The engine scores candidates of many search steps in one call; that gives stock TextAttack's
records only if a text's model output does not depend on the other texts of the call or its
place in it. ``attacks.wrappers.SuiteModelWrapper`` makes that hold by construction where the
kernels allow (length groups, fixed chunk shapes), but whether they allow it depends on the
chunk size and the machine (see its docstring). :func:`scores_are_batch_invariant` scores probe
texts of many lengths built from the model's own vocabulary three ways (one call; reversed;
shuffled into calls of random sizes) and compares the outputs bit for bit.
"""
from __future__ import annotations

import random
import weakref
from typing import Any, Sequence

import torch

PROBE_LENGTHS = (1, 3, 7, 12, 20, 32, 45)
_VERDICTS: "weakref.WeakKeyDictionary[Any, dict[int, bool]]" = weakref.WeakKeyDictionary()


def wrapper_is_batch_invariant(wrapper: Any) -> bool:
    """:func:`scores_are_batch_invariant` for a ``SuiteModelWrapper``, probed once per model
    object and chunk size (every attack built on the same model reuses the verdict)."""
    model = getattr(wrapper, "model", None)
    if model is None or not hasattr(model, "encode"):
        return False
    verdicts = _VERDICTS.setdefault(model, {})
    if wrapper.batch_size not in verdicts:
        counters = wrapper.queries, wrapper.rows, wrapper.seconds
        verdicts[wrapper.batch_size] = scores_are_batch_invariant(
            wrapper, probe_texts(model, per_length=wrapper.batch_size + 3))
        wrapper.queries, wrapper.rows, wrapper.seconds = counters  # the probe's texts are not the attack's
    return verdicts[wrapper.batch_size]


def probe_texts(model: Any, per_length: int, seed: int = 0) -> list[str]:
    """``per_length`` texts of each probe length, of words the model knows."""
    rng = random.Random(seed)
    while getattr(model, "inner", None) is not None and not hasattr(model, "vocab") and not hasattr(model, "tokenizer"):
        model = model.inner  # a wrapped backbone (suite.models.wrapped): its backbone's words
    vocab, tokenizer = getattr(model, "vocab", None), getattr(model, "tokenizer", None)
    if vocab is not None:
        words = [w for w in vocab.words[2:2002] if w.isalpha()]
    elif tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        words = [w for w in list(tokenizer.get_vocab())[:30000] if w.isalpha() and w.islower()][:3000]
    else:
        words = ["the", "a", "good", "bad", "movie", "not", "very", "story", "and", "it"]
    limit = getattr(model, "max_length", 64)
    return [" ".join(rng.choice(words) for _ in range(length))
            for length in PROBE_LENGTHS if length <= limit for _ in range(per_length)]


def scores_are_batch_invariant(score: Any, texts: Sequence[str], seed: int = 0) -> bool:
    """``score(list of texts) -> tensor`` gives every text the same row in three different batchings."""
    rng = random.Random(seed)
    texts = list(texts)
    reference = score(texts)
    order = list(range(len(texts)))[::-1]
    if not torch.equal(score([texts[i] for i in order]), reference[order]):
        return False
    rng.shuffle(order)
    start = 0
    while start < len(order):
        size = rng.randint(1, 24)
        part = order[start:start + size]
        if not torch.equal(score([texts[i] for i in part]), reference[part]):
            return False
        start += size
    return True
